/**
 * An image that shrinks under `mfd send` (truncated mid-migration): the
 * sender exits 6 naming the image and where it ended, the receiver 7 with
 * that reason; nothing under the final name; and a later resume with the
 * shrunken image is refused, naming the size that differs. With compression
 * (the workers compress, a packet at zstd level 19 keeps one busy) the same
 * exit codes: the sender neither ends with its workers' close pending nor
 * dies of SIGBUS in a compressor reading the truncated mapping.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { journalPages, makeImage, tmpdir, until } from '../helpers/index.js';
import { mfd, mfdRecv, lastError } from '../helpers/procs.js';
import { FaultProxy } from '../helpers/proxy.js';

t.test('the image truncated mid-migration: sender exit 6, receiver exit 7, no output that looks complete', async (t) => {
  const dir = tmpdir(t);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const img = makeImage(path.join(dir, 'vm.ram'), 64 << 20, 'random');
  const recv = await mfdRecv(t, ['--output', out, '--json', '--no-progress']);
  const proxy = await FaultProxy.start(t, recv.port, { rate: 8 << 20 });
  const send = mfd(t, [
    'send',
    '--to',
    `127.0.0.1:${proxy.port}`,
    '--channels',
    '2',
    '--json',
    '--no-progress',
    '--log-level',
    'info',
    img,
  ]);
  await send.waitFor(/receiver ready/);
  // Pages durably written first (a checkpoint in the journal), however slow the start on a loaded machine.
  await until('a checkpoint in the journal', () => journalPages(out) > 0);
  fs.truncateSync(img, 1 << 20);
  const shrunkAt = performance.now();
  const [s, r] = await Promise.all([send.done, recv.done]);
  t.equal(s.code, 6, `sender exit 6: ${lastError(s.stderr)}`);
  t.match(JSON.parse(s.stdout), {
    error: { code: 'ERR_IMAGE_SHRANK', message: /image ".*vm\.ram" shrank while sending: .*expected 67108864 bytes/ },
  });
  t.equal(r.code, 7, `receiver exit 7: ${lastError(r.stderr)}`);
  t.match(JSON.parse(r.stdout), { error: { code: 'ERR_REMOTE', message: /sender failed: image .* shrank while sending/ } });
  t.notOk(fs.readdirSync(out).includes('vm.ram'), 'nothing under the final name');
  t.comment(
    `fault: image truncated mid-migration; sender exit ${s.code} after ${Math.round(s.at - shrunkAt)} ms, receiver exit ${r.code} after ${Math.round(r.at - shrunkAt)} ms`,
  );
  t.ok(fs.existsSync(path.join(out, '.vm.ram.mfd-journal')), 'the journal stays (the sender failed, the pages written are sound)');
  const r2 = await mfdRecv(t, ['--output', out, '--no-progress']);
  const again = await mfd(t, ['send', '--to', `127.0.0.1:${r2.port}`, '--resume', '--json', '--no-progress', img]).done;
  t.equal(again.code, 9, `a resume with the shrunken image is refused: ${lastError(again.stderr)}`);
  t.match(JSON.parse(again.stdout), { error: { code: 'ERR_RESUME_MISMATCH', message: /size received 1048576, expected 67108864/ } });
  await r2.done;
});

t.test('truncated under compression: sender exit 6, not a stall or a crash in the compressor', async (t) => {
  const cases: [string, string[]][] = [
    ['zstd level 19, 1 channel, 1 worker', ['--compression', 'zstd', '--zstd-level', '19', '--channels', '1', '--threads', '1']],
    ['lz4, 4 channels', ['--compression', 'lz4', '--channels', '4']],
  ];
  for (const [name, flags] of cases) {
    await t.test(name, async (t) => {
      const dir = tmpdir(t);
      const out = path.join(dir, 'out');
      fs.mkdirSync(out);
      const img = makeImage(path.join(dir, 'vm.ram'), 64 << 20, 'mixed');
      const recv = await mfdRecv(t, ['--output', out, '--json', '--no-progress', '--no-journal']);
      const proxy = await FaultProxy.start(t, recv.port, { rate: 4 << 20 });
      const send = mfd(t, ['send', '--to', `127.0.0.1:${proxy.port}`, ...flags, '--json', '--no-progress', '--log-level', 'info', img]);
      await send.waitFor(/receiver ready/);
      await new Promise((r) => setTimeout(r, 300));
      fs.truncateSync(img, 16 << 20);
      const [s, r] = await Promise.all([send.done, recv.done]);
      t.equal(s.code, 6, `sender exit 6: ${lastError(s.stderr)}`);
      t.match(JSON.parse(s.stdout), { error: { code: 'ERR_IMAGE_SHRANK' } });
      t.equal(r.code, 7, `receiver exit 7: ${lastError(r.stderr)}`);
      t.notOk(fs.readdirSync(out).includes('vm.ram'), 'nothing under the final name');
    });
  }
});
