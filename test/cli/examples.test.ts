/** The examples run as the README says: the shell one and `npm run demo`'s script (smaller), each ending identical. */
import t from 'tap';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const p = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (err += d));
  return new Promise((resolve) => p.on('close', (code) => resolve({ code, out, err })));
}

t.test('examples/loopback.sh', async (t) => {
  const { code, out, err } = await run('bash', [path.join(root, 'examples', 'loopback.sh')]);
  t.equal(code, 0, err);
  t.match(out, /both ramblocks identical/);
  t.match(err, /listening on 127\.0\.0\.1:\d+/, 'on a port the system picked');
});

t.test('examples/demo.mjs (npm run demo), on 32 MiB', async (t) => {
  const { code, out, err } = await run(process.execPath, [path.join(root, 'examples', 'demo.mjs'), '--size', '32M']);
  t.equal(code, 0, err);
  t.match(out, /^\s+identical$/m);
  t.match(out, /^\s+send\s+[\d.]+/m, 'the stats table');
});
