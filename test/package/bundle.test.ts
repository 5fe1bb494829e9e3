/**
 * The bundled CLI (scripts/bundle.mjs): bin/mfd.js runs dist/bundle/cli.js, a few files instead of
 * the compiled tree's modules one by one, and falls back to tsc's output when that is newer than
 * the bundle (a build that ran tsc alone), so a stale bundle never runs.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { tmpdir } from '../helpers/index.js';
import { bin } from '../helpers/files.js';

const root = path.resolve(path.dirname(bin), '..');

t.test('the build made the bundles, from the compiled tree as it is now', async (t) => {
  for (const [bundle, compiled] of [
    ['dist/bundle/cli.js', 'dist/cli/main.js'],
    ['dist/bundle/worker.js', 'dist/compute/worker.js'],
  ] as const) {
    const b = fs.statSync(path.join(root, bundle), { throwIfNoEntry: false });
    t.ok(b, `${bundle} exists`);
    t.ok(b && b.mtimeMs >= fs.statSync(path.join(root, compiled)).mtimeMs, `${bundle} is not older than ${compiled}`);
  }
});

t.test('bin/mfd.js loads the bundle: no module of the compiled tree, a handful of files in all', async (t) => {
  const dir = tmpdir(t);
  const log = path.join(dir, 'loaded');
  // A module resolve hook that writes down every file URL a run loads (hooks run on their own thread).
  fs.writeFileSync(
    path.join(dir, 'hooks.mjs'),
    "import fs from 'node:fs';\n" +
      'export async function resolve(specifier, context, next) {\n' +
      '  const r = await next(specifier, context);\n' +
      "  if (r.url.startsWith('file:')) fs.appendFileSync(process.env.LOADED_LOG, r.url + '\\n');\n" +
      '  return r;\n' +
      '}\n',
  );
  fs.writeFileSync(path.join(dir, 'register.mjs'), "import { register } from 'node:module';\nregister('./hooks.mjs', import.meta.url);\n");
  const out = execFileSync(process.execPath, ['--import', path.join(dir, 'register.mjs'), bin, '--version'], {
    encoding: 'utf8',
    env: { ...process.env, LOADED_LOG: log },
  });
  t.match(out, /^mfd \d+\.\d+\.\d+/);
  const own = fs
    .readFileSync(log, 'utf8')
    .split('\n')
    .filter((u) => u.startsWith(`file://${path.join(root, 'dist')}/`))
    .map((u) => path.relative(root, new URL(u).pathname));
  t.ok(own.includes('dist/bundle/cli.js'), 'the bundled CLI ran');
  t.same(
    own.filter((f) => !f.startsWith('dist/bundle/')),
    [],
    'and no module of the compiled tree',
  );
  t.ok(new Set(own).size <= 12, `${new Set(own).size} files of dist/ loaded (at most 12)`);
});

t.test('a bundle older than the compiled tree is not run: the compiled CLI is', async (t) => {
  // A copy of bin/mfd.js over two stand-in entries that say which one ran.
  const dir = tmpdir(t);
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.copyFileSync(bin, path.join(dir, 'bin', 'mfd.js'));
  const entry = (file: string, name: string): string => {
    const f = path.join(dir, 'dist', file);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, `export async function main() { process.stdout.write('${name}'); return 0; }\n`);
    return f;
  };
  const bundle = entry('bundle/cli.js', 'bundle');
  const compiled = entry('cli/main.js', 'compiled');
  fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
  const run = (): string => execFileSync(process.execPath, [path.join(dir, 'bin', 'mfd.js')], { encoding: 'utf8' });

  const now = Date.now() / 1000;
  fs.utimesSync(compiled, now - 60, now - 60);
  fs.utimesSync(bundle, now, now);
  t.equal(run(), 'bundle', 'a bundle newer than the compiled tree runs');
  fs.utimesSync(bundle, now - 60, now - 60);
  t.equal(run(), 'bundle', 'and one just as new (a packed tarball gives every file one time)');
  fs.utimesSync(bundle, now - 120, now - 120);
  t.equal(run(), 'compiled', 'an older one does not');
  fs.rmSync(bundle);
  t.equal(run(), 'compiled', 'nor a missing one');
});
