/**
 * ISA-L is found at run time (addon/isal.h): the same addon file runs with and without it. A
 * process whose libisal.so.2 cannot be loaded (MFD_ISAL_LIBRARY naming a missing file stands in
 * for a host without it; "off" turns it off) says why, computes CRC-32C with the built-in code and
 * deflates with zlib; a zlib migration between it and a process with ISA-L still verifies, and each
 * side's summary names the engine that ran.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { native } from '../../src/native/load.js';
import { bin } from '../helpers/files.js';
import { makeImage, tmpdir } from '../helpers/index.js';

const skip = native.isalVersion === null ? `ISA-L is not available here either way: ${native.isalUnavailable}` : false;
const MISSING = '/nonexistent/libisal.so.2';
const loadUrl = new URL('../../dist/native/load.js', import.meta.url).href;
const methodsUrl = new URL('../../dist/methods/index.js', import.meta.url).href;

/** What the addon reports in a fresh process with `env`. */
function probe(env: Record<string, string>): Record<string, unknown> {
  const script = `
    const { native } = await import(${JSON.stringify(loadUrl)});
    const { getMethod } = await import(${JSON.stringify(methodsUrl)});
    let isalStream = 'made';
    try { new native.ZlibStream(false, 1, 'isal'); } catch (e) { isalStream = e.code + ': ' + e.message; }
    const page = new Uint8Array(4096).map((_, i) => (i * 7) & 0xff);
    console.log(JSON.stringify({
      isalVersion: native.isalVersion, isalFile: native.isalFile, isalUnavailable: native.isalUnavailable,
      crc32cEngine: native.crc32cEngine, check: native.crc32c(Buffer.from('123456789')),
      pageCrc: native.crc32c(page), qzInflate: typeof native.qzInflate, isalStream,
      zlibPath: getMethod('zlib').path({ params: { level: 1 }, requireHardware: false }),
    }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

const page = new Uint8Array(4096).map((_, i) => (i * 7) & 0xff);

t.test('without libisal.so.2: the reason, the built-in CRC-32C, zlib', { skip }, async (t) => {
  const r = probe({ MFD_ISAL_LIBRARY: MISSING });
  t.equal(r.isalVersion, null);
  t.equal(r.isalFile, null);
  t.match(r.isalUnavailable, new RegExp(`^ISA-L could not be loaded \\(${MISSING}: cannot open shared object file`));
  t.match(r.crc32cEngine, /^(sse4\.2|table)$/);
  t.equal(r.check, 0xe3069283, 'CRC-32C check value');
  t.equal(r.pageCrc, native.crc32c(page), 'a page: the same CRC as with ISA-L');
  t.equal(r.qzInflate, 'undefined', "qatzip inflates with Node's gunzip");
  t.equal(r.isalStream, `ERR_ZLIB: ${r.isalUnavailable as string}`);
  t.equal(r.zlibPath, `software: zlib ${native.zlibVersion} (level 1)`);
});

t.test('MFD_ISAL_LIBRARY=off turns it off; unset, the soname is loaded', { skip }, async (t) => {
  const off = probe({ MFD_ISAL_LIBRARY: 'off' });
  t.equal(off.isalVersion, null);
  t.equal(off.isalUnavailable, 'ISA-L is turned off (MFD_ISAL_LIBRARY=off)');
  const on = probe({});
  t.equal(on.isalVersion, native.isalVersion);
  t.match(on.isalFile, /libisal\.so\.2/);
  t.equal(on.crc32cEngine, `isa-l ${native.isalVersion} crc32_iscsi`);
  t.equal(on.pageCrc, off.pageCrc, 'a page: the same CRC either way');
  t.equal(on.qzInflate, 'function');
  t.equal(on.isalStream, 'made');
});

t.test('a zlib migration from a sender with ISA-L to a receiver without it verifies; each names its engine', { skip }, async (t) => {
  const dir = tmpdir(t);
  const image = makeImage(path.join(dir, 'vm.ram'), 8 << 20, 'mixed');
  const run = (args: string[], env: Record<string, string>) => {
    const p = spawn(process.execPath, [bin, ...args, '--json'], { env: { ...process.env, ...env } });
    t.teardown(() => void p.kill('SIGKILL'));
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const done = new Promise<{ code: number | null; json: Record<string, unknown> }>((r) =>
      p.on('close', (code) => r({ code, json: JSON.parse(stdout || '{}') as Record<string, unknown> })),
    );
    return { done, stderr: () => stderr };
  };
  fs.mkdirSync(path.join(dir, 'out'));
  const recv = run(['recv', '--listen', '127.0.0.1:0', '--output', path.join(dir, 'out'), '--log-level', 'info'], {
    MFD_ISAL_LIBRARY: MISSING,
  });
  let port = '';
  for (let i = 0; i < 300 && !port; i++) {
    port = /listening on [^\s"]+:(\d+)/.exec(recv.stderr())?.[1] ?? '';
    if (!port) await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(port, `the receiver listens${port ? '' : `: ${recv.stderr()}`}`);
  const sent = await run(['send', '--to', `127.0.0.1:${port}`, '--compression', 'zlib', '--channels', '2', image], {}).done;
  const received = await recv.done;
  t.equal(sent.code, 0, 'send exits 0');
  t.equal(received.code, 0, 'recv exits 0');
  t.ok(fs.readFileSync(path.join(dir, 'out', 'vm.ram')).equals(fs.readFileSync(image)), 'the image arrived intact');
  t.equal(sent.json.compressionPath, `software: isa-l igzip ${native.isalVersion} (level 1 -> isal 1)`, 'the sender deflated with igzip');
  t.equal(received.json.compressionPath, `software: zlib ${native.zlibVersion}`, 'the receiver inflated with zlib');
});
