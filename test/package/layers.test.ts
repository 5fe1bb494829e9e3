/**
 * The layers of src/: a module imports only from its own layer or one below, never from above
 * (README, "Where things are"). Every import of every file under src/ counts: static, dynamic,
 * `import type` and `export ... from`, read by TypeScript's own pre-processor. A folder that no
 * layer names fails too, so a new folder says where it stands.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const src = path.join(root, 'src');

/** Lowest first. A folder of src/, or a file at its root. */
const LAYERS: string[][] = [
  // the base every module may use
  ['errors.ts', 'log.ts', 'text.ts', 'version.ts'],
  // the addon, file and buffer pieces, child processes
  ['native', 'io', 'proc'],
  // the multifd codec; offload's path counts and backend states
  ['wire', 'offload'],
  // images as pages; the compression methods and zero-page backends (which never see accel, the sender or the receiver)
  ['image', 'methods', 'zero-page'],
  // the compute worker and its pool; mfd accel's report, which asks the methods and backends
  ['compute', 'accel'],
  // the data paths: both sides, their connections and control channel, migration files, run statistics
  ['control', 'transport', 'sender', 'receiver', 'file', 'stats'],
  // delta transfer: extends the data paths through the extension points they define (SendExtension, RecvExtension,
  // SaveExtension, RestoreExtension), and is wired in by migrate; the data paths never import it
  ['delta'],
  // mfd inspect, of channel streams and migration files, which reads them through the receiver's and the file's code
  ['inspect'],
  // QEMU as a peer
  ['qemu'],
  // where a migration goes or comes from, as one typed value, and the one call that picks the path
  ['migrate'],
  // mfd bench (runs QEMU as a peer)
  ['bench'],
  // the command line
  ['cli'],
  // the package's entry
  ['index.ts'],
];

const layerOf = new Map(LAYERS.flatMap((names, i) => names.map((n) => [n, i] as const)));

/** The folder of src/ (or the root file) that `file` belongs to. */
function room(file: string): string {
  return path.relative(src, file).split(path.sep)[0]!;
}

interface Upward {
  file: string;
  imports: string;
  fileLayer: string;
  importLayer: string;
}

/** Imports from a layer above the importing file's own, and files in no layer. */
function check(files: Map<string, string>): { upward: Upward[]; unplaced: string[] } {
  const upward: Upward[] = [];
  const unplaced = new Set<string>();
  for (const [file, text] of files) {
    const from = layerOf.get(room(file));
    if (from === undefined) {
      unplaced.add(room(file));
      continue;
    }
    for (const ref of ts.preProcessFile(text, true, true).importedFiles) {
      if (!ref.fileName.startsWith('.')) continue;
      const target = path.resolve(path.dirname(file), ref.fileName).replace(/\.js$/, '.ts');
      if (!target.startsWith(src + path.sep)) continue;
      const to = layerOf.get(room(target));
      if (to === undefined) unplaced.add(room(target));
      else if (to > from)
        upward.push({
          file: path.relative(root, file),
          imports: path.relative(root, target),
          fileLayer: LAYERS[from]!.join(' '),
          importLayer: LAYERS[to]!.join(' '),
        });
    }
  }
  return { upward, unplaced: [...unplaced].sort() };
}

function sources(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !e.name.endsWith('.ts')) continue;
    const file = path.join(e.parentPath, e.name);
    out.set(file, fs.readFileSync(file, 'utf8'));
  }
  return out;
}

t.test('no module of src/ imports from a layer above its own', async (t) => {
  const files = sources(src);
  t.ok(files.size > 100, `${files.size} files read`);
  const { upward, unplaced } = check(files);
  t.same(unplaced, [], 'every folder of src/ and file at its root is in a layer');
  t.same(
    upward.map((u) => `${u.file} imports ${u.imports} (layer ${u.importLayer}, above ${u.fileLayer})`),
    [],
    'no upward import',
  );
});

t.test('the check finds an upward import of every kind, and a folder in no layer', async (t) => {
  const at = (p: string): string => path.join(src, p);
  const files = new Map([
    [
      at('methods/zstd.ts'),
      "import { accelReport } from '../accel/report.js';\nimport type { SendPipeline } from '../sender/pipeline.js';",
    ],
    [at('zero-page/cpu.ts'), "export { send } from '../sender/sender.js';"],
    [at('qemu/qmp.ts'), "const m = await import('../bench/bench.js');"],
    [at('compute/worker.ts'), "import { ImageSource } from '../image/image-source.js';\nimport { log } from '../log.js';"],
    [at('file/save.ts'), "import { inspectFile } from '../inspect/file.js';\nimport { migrate } from '../migrate/migrate.js';"],
    [at('attic/old.ts'), "import { x } from '../errors.js';"],
  ]);
  const { upward, unplaced } = check(files);
  t.same(
    upward.map((u) => `${u.file} -> ${u.imports}`),
    [
      'src/methods/zstd.ts -> src/accel/report.ts',
      'src/methods/zstd.ts -> src/sender/pipeline.ts',
      'src/zero-page/cpu.ts -> src/sender/sender.ts',
      'src/qemu/qmp.ts -> src/bench/bench.ts',
      'src/file/save.ts -> src/inspect/file.ts',
      'src/file/save.ts -> src/migrate/migrate.ts',
    ],
  );
  t.same(unplaced, ['attic']);
});
