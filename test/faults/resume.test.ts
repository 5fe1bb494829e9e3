/**
 * `mfd send --resume` after a failed migration, with the faults injected on
 * loopback by the test: one data channel reset by a proxy (the same receiver,
 * waiting with --resume-wait), and the receiver process killed (SIGKILL, a
 * restarted receiver on the same output). Each ends byte-identical with fewer
 * pages sent than the image holds; the journal is there during and after the
 * failure and gone after success; nothing looks complete before the verdict;
 * a resume that does not match the journal, or has none, is refused (exit 9).
 */
import type { Test } from 'tap';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { journalPages, makeImage, rejection, sha256, startReceiver, tmpdir, until } from '../helpers/index.js';
import { send } from '../../src/sender/sender.js';
import { silentLogger } from '../../src/log.js';
import { mfd, mfdRecv, lastError } from '../helpers/procs.js';
import { FaultProxy } from '../helpers/proxy.js';

const SIZE = 64 << 20;
const PAGES = SIZE / 4096;

/** Only temporary names in `dir`: nothing that looks like a complete output. */
function onlyTemporary(dir: string): boolean {
  return fs.readdirSync(dir).every((f) => f.startsWith('.vm.ram.mfd-'));
}

function setup(t: Test) {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(dir, 'vm.ram'), SIZE, 'mixed', 7);
  return { dir, out, img };
}

/** A successful `send --resume` to `port`: its JSON summary. */
async function resume(t: Test, port: number, img: string) {
  const s = await mfd(t, ['send', '--to', `127.0.0.1:${port}`, '--resume', '--channels', '2', '--json', '--no-progress', img]).done;
  t.equal(s.code, 0, `send --resume exits 0: ${lastError(s.stderr)}`);
  const stats = JSON.parse(s.stdout) as {
    resumedPages: number;
    normalPages: number;
    zeroPages: number;
    wireBytes: number;
    receiver: { resumedPages: number };
  };
  t.ok(stats.resumedPages > 0, `resumed: ${stats.resumedPages} pages held by the receiver`);
  t.equal(stats.normalPages + stats.zeroPages + stats.resumedPages, PAGES, 'sent pages + held pages = the image');
  t.ok(stats.normalPages + stats.zeroPages < PAGES, `sent ${stats.normalPages + stats.zeroPages} of ${PAGES} pages`);
  t.equal(stats.receiver.resumedPages, stats.resumedPages, 'the receiver counts the same held pages');
  return stats;
}

t.test('a data channel reset mid-migration: send --resume to the same receiver ends byte-identical', async (t) => {
  const { out, img } = setup(t);
  const recv = await mfdRecv(t, ['--output', out, '--resume-wait', '30', '--json', '--no-progress']);
  const proxy = await FaultProxy.start(t, recv.port, { rate: 12 << 20, resetDataChannelAfter: 4 << 20 });
  const first = await mfd(t, ['send', '--to', `127.0.0.1:${proxy.port}`, '--channels', '2', '--json', '--no-progress', img]).done;
  t.ok(proxy.resetAt !== null, 'the proxy reset channel 0 mid-migration');
  t.ok(first.code === 4 || first.code === 7, `the sender fails with exit 4 or 7: ${lastError(first.stderr)}`);
  // error-desc is the whole text, the place (channel N, in error.channel) included.
  t.match(JSON.parse(first.stdout), { status: 'failed', 'error-desc': /channel|connection|ECONNRESET/ });
  await recv.waitFor(/waiting 30 s .* for mfd send --resume/);
  const waitingAt = performance.now();
  t.ok(journalPages(out) > 0, `the journal holds ${journalPages(out)} pages after the failure`);
  t.ok(fs.existsSync(path.join(out, '.vm.ram.mfd-partial')), 'the partial output stays beside it');
  t.ok(onlyTemporary(out), 'nothing under the final name');
  t.comment(
    `fault: data channel reset; sender exit ${first.code} after ${Math.round(first.at - proxy.resetAt!)} ms; receiver waiting for a resume after ${Math.round(waitingAt - proxy.resetAt!)} ms`,
  );
  await resume(t, recv.port, img);
  const r = await recv.done;
  t.equal(r.code, 0, `the receiver verifies and exits 0: ${lastError(r.stderr)}`);
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img), 'byte-identical');
  t.same(fs.readdirSync(out), ['vm.ram'], 'journal and partial gone after success');
});

t.test(
  'the receiver killed mid-migration: a restarted receiver and send --resume end byte-identical; mismatches are refused',
  async (t) => {
    const { dir, out, img } = setup(t);
    const recv = await mfdRecv(t, ['--output', out, '--no-progress']);
    const proxy = await FaultProxy.start(t, recv.port, { rate: 8 << 20 });
    const send = mfd(t, ['send', '--to', `127.0.0.1:${proxy.port}`, '--channels', '2', '--json', '--no-progress', img]);
    await until('a checkpoint in the journal', () => journalPages(out) > 0);
    t.ok(onlyTemporary(out), 'during the migration: only the partial output and its journal');
    recv.p.kill('SIGKILL');
    const killedAt = performance.now();
    const first = await send.done;
    t.equal(first.code, 4, `the sender exits 4: ${lastError(first.stderr)}`);
    t.comment(`fault: receiver SIGKILL; sender exit ${first.code} after ${Math.round(first.at - killedAt)} ms`);
    const held = journalPages(out);
    t.ok(held > 0 && held < PAGES, `the journal survives the kill with ${held} pages`);

    // Refused: another page size; an image that is not the journaled one; a receiver with no journal.
    const r1 = await mfdRecv(t, ['--output', out, '--no-progress']);
    const bad = await mfd(t, ['send', '--to', `127.0.0.1:${r1.port}`, '--resume', '--page-size', '16384', '--json', '--no-progress', img])
      .done;
    t.equal(bad.code, 9, `page size mismatch: sender exit 9: ${lastError(bad.stderr)}`);
    t.match(JSON.parse(bad.stdout), { error: { code: 'ERR_RESUME_MISMATCH', message: /page size received 16384, expected 4096/ } });
    t.equal((await r1.done).code, 9, 'the receiver exits 9 too');
    const copy = path.join(dir, 'copy.ram');
    fs.copyFileSync(img, copy);
    const r2 = await mfdRecv(t, ['--output', out, '--no-progress']);
    const other = await mfd(t, ['send', '--to', `127.0.0.1:${r2.port}`, '--resume', '--json', '--no-progress', `vm.ram=${copy}`]).done;
    t.equal(other.code, 9, `another image file: exit 9: ${lastError(other.stderr)}`);
    t.match(JSON.parse(other.stdout), {
      error: {
        code: 'ERR_RESUME_MISMATCH',
        message: /source image received "size=67108864 mtime=\d+ ino=\d+", expected "size=67108864 mtime=\d+ ino=\d+"/,
      },
    });
    await r2.done;
    const empty = path.join(dir, 'empty');
    fs.mkdirSync(empty);
    const r3 = await mfdRecv(t, ['--output', empty, '--no-progress']);
    const none = await mfd(t, ['send', '--to', `127.0.0.1:${r3.port}`, '--resume', '--json', '--no-progress', img]).done;
    t.equal(none.code, 9, `no journal: exit 9: ${lastError(none.stderr)}`);
    t.match(JSON.parse(none.stdout), {
      error: { code: 'ERR_RESUME_NO_JOURNAL', message: /no progress journal at ".*\.vm\.ram\.mfd-journal"/ },
    });
    await r3.done;
    t.equal(journalPages(out), held, 'refused resumes leave the journal as it was');

    const r4 = await mfdRecv(t, ['--output', out, '--json', '--no-progress']);
    const stats = await resume(t, r4.port, img);
    t.ok(stats.resumedPages >= held, 'at least the journaled pages are not sent again');
    t.equal((await r4.done).code, 0);
    t.equal(sha256(path.join(out, 'vm.ram')), sha256(img), 'byte-identical');
    t.same(fs.readdirSync(out), ['vm.ram'], 'journal and partial gone after success');
  },
);

t.test('Ctrl-C on the sender mid-migration (receiver --in-place): both stop cleanly, then send --resume finishes', async (t) => {
  const { out, img } = setup(t);
  const recv = await mfdRecv(t, ['--output', out, '--in-place', '--no-progress']);
  const proxy = await FaultProxy.start(t, recv.port, { rate: 8 << 20 });
  const send = mfd(t, ['send', '--to', `127.0.0.1:${proxy.port}`, '--channels', '2', '--json', '--no-progress', img]);
  await until('a checkpoint in the journal', () => journalPages(out) > 0);
  send.p.kill('SIGINT');
  const interruptedAt = performance.now();
  const [s, r] = await Promise.all([send.done, recv.done]);
  t.equal(s.code, 130, `the sender exits 130: ${lastError(s.stderr)}`);
  t.equal(r.code, 7, `the receiver exits 7 with the sender's reason: ${lastError(r.stderr)}`);
  t.match(r.stderr, /sender failed: interrupted by SIGINT/);
  t.comment(
    `fault: SIGINT on the sender; sender exit ${s.code} after ${Math.round(s.at - interruptedAt)} ms, receiver exit ${r.code} after ${Math.round(r.at - interruptedAt)} ms`,
  );
  t.same(
    fs.readdirSync(out).sort(),
    ['.vm.ram.mfd-journal', 'vm.ram', 'vm.ram.mfd-partial'],
    'in place: the target, its marker and the journal',
  );
  t.ok(journalPages(out) > 0);
  const r2 = await mfdRecv(t, ['--output', out, '--in-place', '--json', '--no-progress']);
  await resume(t, r2.port, img);
  t.equal((await r2.done).code, 0);
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img), 'byte-identical');
  t.same(fs.readdirSync(out), ['vm.ram'], 'marker and journal gone after success');
});

t.test('the control channel reset mid-migration: both sides stop, the journal stays, send --resume finishes', async (t) => {
  const { out, img } = setup(t);
  const recv = await mfdRecv(t, ['--output', out, '--resume-wait', '30', '--json', '--no-progress']);
  const proxy = await FaultProxy.start(t, recv.port, { rate: 8 << 20 });
  const send = mfd(t, ['send', '--to', `127.0.0.1:${proxy.port}`, '--channels', '2', '--json', '--no-progress', img]);
  await until('a checkpoint in the journal', () => journalPages(out) > 0);
  t.ok(proxy.resetControl(), 'control channel reset');
  const s = await send.done;
  t.equal(s.code, 4, `the sender exits 4: ${lastError(s.stderr)}`);
  t.match(JSON.parse(s.stdout), { error: { code: /^ERR_CONTROL_(CONNECTION|CLOSED)$/, message: /control channel/ } });
  await recv.waitFor(/waiting 30 s .* for mfd send --resume/);
  t.match(recv.stderr(), /control channel .*(ECONNRESET|closed by the peer)/, 'the receiver names the control channel');
  t.comment(
    `fault: control channel reset; sender exit ${s.code} after ${Math.round(s.at - proxy.resetAt!)} ms; receiver failed and waiting for a resume after ${Math.round(performance.now() - proxy.resetAt!)} ms`,
  );
  t.ok(onlyTemporary(out) && journalPages(out) > 0, 'only the partial output and its journal');
  await resume(t, recv.port, img);
  t.equal((await recv.done).code, 0);
  t.equal(sha256(path.join(out, 'vm.ram')), sha256(img), 'byte-identical');
});

t.test("a resume refused on its second ramblock leaves the first one's partial output as it found it", async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const a = makeImage(path.join(dir, 'a.ram'), 16 << 20, 'random', 1);
  const b = makeImage(path.join(dir, 'b.ram'), 16 << 20, 'random', 2);
  const images = [
    { name: 'a.ram', path: a },
    { name: 'b.ram', path: b },
  ];
  const pipeline = { images, channels: 2, pageSize: 4096, compression: 'none', methodParams: {}, zeroPageDetection: 'multifd' } as const;
  // A first attempt cut by a channel reset, with journals kept for both blocks.
  const r1 = await startReceiver({ outputDir: out, journalIntervalMs: 100 });
  r1.result.catch(() => {});
  const proxy = await FaultProxy.start(t, r1.port, { rate: 16 << 20, resetDataChannelAfter: 12 << 20 });
  await rejection(send({ host: '127.0.0.1', port: proxy.port, logger: silentLogger, ...pipeline }));
  await rejection(r1.result);
  const partialA = path.join(out, '.a.ram.mfd-partial');
  t.ok(fs.existsSync(partialA) && fs.existsSync(path.join(out, '.b.ram.mfd-journal')), 'both blocks kept their partial output and journal');
  const before = sha256(partialA);
  fs.rmSync(path.join(out, '.b.ram.mfd-partial'));
  const r2 = await startReceiver({ outputDir: out });
  const refused = await rejection(send({ host: '127.0.0.1', port: r2.port, logger: silentLogger, ...pipeline, resume: true }));
  t.match(refused, { code: 'ERR_RESUME_NO_PARTIAL', message: /b\.ram/ });
  t.match(await rejection(r2.result), { code: 'ERR_RESUME_NO_PARTIAL' });
  t.ok(fs.existsSync(partialA), "a.ram's partial output is still there");
  t.equal(sha256(partialA), before, 'and unchanged');
  t.ok(fs.existsSync(path.join(out, '.a.ram.mfd-journal')), 'with its journal');
});
