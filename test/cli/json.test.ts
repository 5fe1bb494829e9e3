/**
 * --json: QEMU's query-migrate names beside mfd's own, mfd-version and
 * schema-version, and every command's real output valid against the JSON
 * Schema generated from the types at build time.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { makeImage, tmpdir } from '../helpers/index.js';
import { bin } from '../helpers/files.js';
import { mfd, mfdRecv } from '../helpers/procs.js';
import { schemaErrors } from '../helpers/schema.js';
import { JSON_SCHEMA_VERSION, MFD_VERSION } from '../../src/version.js';

const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 120_000 });
const pkg = JSON.parse(fs.readFileSync(path.join(path.dirname(bin), '..', 'package.json'), 'utf8')) as { version: string };

t.test("a migration's --json: QEMU's query-migrate names, the version, and valid against the schema", async (t) => {
  t.equal(MFD_VERSION, pkg.version);
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(dir, 'vm.ram'), 2 << 20, 'mixed');
  const recv = await mfdRecv(t, ['--output', out, '--json', '--no-progress']);
  const s = await mfd(t, ['send', '--to', `127.0.0.1:${recv.port}`, '--channels', '2', '--json', '--no-progress', img]).done;
  const r = await recv.done;
  t.equal(s.code, 0, s.stderr);
  t.equal(r.code, 0, r.stderr);
  const sent = JSON.parse(s.stdout);
  const got = JSON.parse(r.stdout);
  for (const [o, kind] of [
    [sent, 'SendJson'],
    [got, 'RecvJson'],
  ] as const) {
    t.equal(schemaErrors(kind, o), '', `${kind} is valid`);
    t.equal(o['mfd-version'], pkg.version);
    t.equal(o['schema-version'], JSON_SCHEMA_VERSION);
    t.equal(o.status, 'completed');
    t.equal(o['total-time'], Math.round(o.totalTimeMs), 'total-time: milliseconds, as QEMU');
    t.same(o.ram, {
      transferred: o.wireBytes,
      total: 2 << 20,
      remaining: 0,
      normal: o.normalPages,
      'normal-bytes': o.normalPages * 4096,
      duplicate: o.zeroPages,
      mbps: o.mbps,
      'pages-per-second': o.pagesPerSecond,
      'multifd-bytes': o.wireBytes,
      'page-size': 4096,
    });
    t.equal(o.ram.normal + o.ram.duplicate, 512, 'every page is normal or duplicate (zero)');
    t.ok(o.ram.duplicate > 0 && o.ram.normal > 0, 'a mixed image has both');
  }
  t.equal(sent.ram.transferred, got.ram.transferred, 'both sides count the same bytes');
});

t.test('file save, file restore, failure, inspect, accel, gen-image and bench --json are valid against the schema', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'vm.ram'), 1 << 20, 'mixed');
  const file = path.join(dir, 'm.bin');
  const check = (kind: Parameters<typeof schemaErrors>[0], r: ReturnType<typeof run>, code = 0): Record<string, unknown> => {
    t.equal(r.status, code, `${kind}: exit ${code}: ${r.stderr.slice(-500)}`);
    const o = JSON.parse(r.stdout) as Record<string, unknown>;
    t.equal(schemaErrors(kind, o), '', `${kind} is valid`);
    t.equal(o['mfd-version'], pkg.version);
    return o;
  };
  t.match(check('SendJson', run('send', '--to', `file:${file}`, '--json', img)), { file: { path: file }, ram: { total: 1 << 20 } });
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  check('RecvJson', run('recv', '--from', `file:${file}`, '--output', out, '--json'));
  t.match(check('FailureJson', run('send', '--to', '127.0.0.1:1', '--json', img), 4), {
    status: 'failed',
    'error-desc': /cannot connect/,
    error: { code: 'ERR_ECONNREFUSED' },
  });
  check('FailureJson', run('send', '--to', '127.0.0.1:1', '--channels', '999', '--json', img), 2);
  check('InspectJson', run('inspect', '--json', file));
  // A damaged stream: the report lists errors, exit 3, still valid.
  const junk = path.join(dir, 'junk.bin');
  fs.writeFileSync(junk, Buffer.alloc(700, 7));
  check('InspectJson', run('inspect', '--json', junk), 3);
  check('AccelJson', run('accel', '--json'));
  check('GenImageJson', run('gen-image', '--size', '64K', '--json', path.join(dir, 'g.ram')));
  const b = run(
    'bench',
    '--size',
    '1M',
    '--compression',
    'none',
    '--channels',
    '1',
    '--runs',
    '1',
    '--warmup',
    '0',
    '--peers',
    'none',
    '--dir',
    dir,
    '--out',
    path.join(dir, 'bench'),
    '--json',
    '--no-progress',
  );
  t.equal(b.status, 0, b.stderr.slice(-500));
  const lines = b.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string });
  t.same([...new Set(lines.map((l) => l.type))].sort(), ['cell', 'meta', 'run', 'target']);
  for (const l of lines) t.equal(schemaErrors('BenchJsonLine', l), '', `bench ${l.type} line is valid`);
  // The schema holds: a field the types do not name is refused.
  const bad = JSON.parse(run('gen-image', '--size', '64K', '--json', path.join(dir, 'h.ram')).stdout);
  t.match(schemaErrors('GenImageJson', { ...bad, surprise: 1 }), /must NOT have additional properties/);
  t.match(schemaErrors('SendJson', { ...bad }), /must have required property/);
});
