/**
 * The npm package as a user gets it: `npm pack` (after its prepack, which makes the prebuilt addon
 * if it is missing or stale), then `npm install ./mfd-*.tgz --ignore-scripts` into an empty folder
 * (from the local npm cache where it can), so no compiler runs. From there `mfd recv` and
 * `mfd send` move an image over loopback with the prebuilt addon, the types resolve for a
 * TypeScript consumer, node-gyp is not installed, and every source map points at a packed file.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeImage, tmpdir } from '../helpers/index.js';

// prepack may compile the prebuilt addon (and arm64's, where the cross compiler is): minutes on a busy machine.
t.setTimeout(1_200_000);

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  os: string[];
  dependencies: Record<string, string>;
  exports: Record<string, unknown>;
  types: string;
};
const npm = (args: string[], cwd: string): string =>
  execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const prebuild = `prebuilds/linux-${process.arch}/mfd.glibc.node`;

t.test('package.json: Linux only, node-gyp-build loads the addon, node-gyp is not a dependency, types exported', async (t) => {
  t.same(pkg.os, ['linux']);
  t.ok(pkg.dependencies['node-gyp-build'], 'node-gyp-build is a dependency');
  t.notOk(pkg.dependencies['node-gyp'], 'node-gyp is not');
  t.equal(pkg.types, './dist/index.d.ts');
  t.same(pkg.exports['.'], { types: './dist/index.d.ts', default: './dist/index.js' });
});

t.test('on another OS the program says it runs on Linux only, without a stack trace', async (t) => {
  const bin = path.join(root, 'bin', 'mfd.js');
  const asDarwin = 'data:text/javascript,Object.defineProperty(process, "platform", { value: "darwin" })';
  const r = spawnSync(process.execPath, ['--import', asDarwin, bin, '--version'], { encoding: 'utf8' });
  t.equal(r.status, 1);
  t.equal(r.stdout, '');
  t.match(r.stderr, /^mfd: mfd runs on Linux only \(this is darwin\).* \[ERR_NATIVE_LOAD\]\n$/);
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

const noIsal =
  spawnSync('pkg-config', ['--exists', 'libisal >= 2.25']).status === 0
    ? false
    : "prebuilt addons are built with ISA-L's headers, and pkg-config finds no libisal here (apt-get install libisal-dev pkg-config)";

t.test(
  'packed, installed without scripts, it migrates over loopback with the prebuilt addon',
  { timeout: 1_200_000, skip: noIsal },
  async (t) => {
    const dir = tmpdir(t);
    // prepack (the prebuilt addon, made here when missing or older than addon/); dist/ is pretest's.
    npm(['run', 'prepack'], root);
    t.ok(fs.existsSync(path.join(root, prebuild)), `${prebuild} exists`);

    const [packed] = JSON.parse(npm(['pack', '--ignore-scripts', '--json', '--pack-destination', dir], root)) as {
      filename: string;
      files: { path: string }[];
    }[];
    const files = new Set(packed!.files.map((f) => f.path));
    t.ok(files.has(prebuild), 'the tarball carries the prebuilt addon');
    for (const dir of fs.readdirSync(path.join(root, 'prebuilds'))) t.ok(files.has(`prebuilds/${dir}/mfd.glibc.node`), `and ${dir}'s`);
    t.ok(files.has('dist/index.d.ts') && files.has('dist/native/binding.d.ts'), 'and the types');
    t.ok(files.has('dist/bundle/cli.js') && files.has('dist/bundle/worker.js'), 'and the bundled CLI and worker');
    t.notOk(
      [...files].some((f) => f.startsWith('build/')),
      'and no build/ directory',
    );
    const missing: string[] = [];
    for (const f of files) {
      if (!f.endsWith('.js.map')) continue;
      const map = JSON.parse(fs.readFileSync(path.join(root, f), 'utf8')) as { sources: string[] };
      for (const s of map.sources) {
        const target = path.posix.normalize(path.posix.join(path.posix.dirname(f), s));
        if (!files.has(target)) missing.push(`${f} -> ${target}`);
      }
    }
    t.same(missing, [], 'every source map points at a packed file');

    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
    npm(['install', path.join(dir, packed!.filename), '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], app);
    const installed = path.join(app, 'node_modules', 'mfd');
    t.notOk(fs.existsSync(path.join(installed, 'build')), 'nothing was compiled');
    t.notOk(fs.existsSync(path.join(app, 'node_modules', 'node-gyp')), 'node-gyp was not installed');

    const probe = execFileSync(
      process.execPath,
      ['--input-type=module', '-e', "const m = await import('mfd'); console.log(m.nativeFile)"],
      { cwd: app, encoding: 'utf8' },
    );
    t.equal(fs.realpathSync(probe.trim()), fs.realpathSync(path.join(installed, prebuild)), 'import "mfd" loads the prebuilt addon');

    // A TypeScript consumer type-checks against the installed declarations.
    fs.writeFileSync(
      path.join(app, 'use.ts'),
      [
        "import { send, receive, ExitCode, MfdError, native, type SendOptions, type RecvResult } from 'mfd';",
        'const code: number = ExitCode.AUTH;',
        'const engine: string = native.crc32cEngine;',
        'type Run = (o: SendOptions) => Promise<unknown>;',
        'const run: Run = send;',
        'const r: (o: Parameters<typeof receive>[0]) => Promise<RecvResult> = receive;',
        'export { code, engine, run, r, MfdError };',
      ].join('\n'),
    );
    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const typeRoots = path.join(root, 'node_modules', '@types');
    try {
      execFileSync(
        process.execPath,
        [
          tsc,
          '--noEmit',
          '--strict',
          '--module',
          'nodenext',
          '--moduleResolution',
          'nodenext',
          '--target',
          'es2022',
          '--types',
          'node',
          '--typeRoots',
          typeRoots,
          'use.ts',
        ],
        { cwd: app, encoding: 'utf8' },
      );
      t.pass('a TypeScript consumer type-checks against the installed package');
    } catch (err) {
      t.fail(`tsc: ${(err as { stdout: string }).stdout}`);
    }

    const mfd = path.join(app, 'node_modules', '.bin', 'mfd');
    const image = makeImage(path.join(dir, 'vm.ram'), 16 << 20, 'mixed');
    fs.mkdirSync(path.join(dir, 'out'));
    const recv = spawn(mfd, ['recv', '--listen', '127.0.0.1:0', '--output', path.join(dir, 'out'), '--log-level', 'info'], { cwd: app });
    t.teardown(() => void recv.kill('SIGKILL'));
    let stderr = '';
    recv.stderr.on('data', (d) => (stderr += d));
    const recvDone = new Promise<number | null>((r) => recv.on('close', r));
    let port = '';
    for (let i = 0; i < 300 && !port; i++) {
      port = /listening on [^\s"]+:(\d+)/.exec(stderr)?.[1] ?? '';
      if (!port) await new Promise((r) => setTimeout(r, 100));
    }
    t.ok(port, `the installed mfd recv listens${port ? '' : `: ${stderr}`}`);
    const sent = execFileSync(mfd, ['send', '--to', `127.0.0.1:${port}`, '--channels', '4', '--compression', 'zlib', '--json', image], {
      cwd: app,
      encoding: 'utf8',
    });
    t.equal(await recvDone, 0, 'recv exits 0');
    t.not((JSON.parse(sent) as { status?: string }).status, 'failed', 'send exits 0 and reports no failure');
    t.ok(fs.readFileSync(path.join(dir, 'out', 'vm.ram')).equals(fs.readFileSync(image)), 'the image arrived intact');
  },
);
