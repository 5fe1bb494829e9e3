/** Fuzz: a live receiver fed mutated data-channel streams, and regressions for the receiver's peer-sized state. */
import t from 'tap';
import fs from 'node:fs';
import { RawSender, startReceiver, tmpdir, rejection } from '../helpers/index.js';

t.test('regression: a hello declaring 64 TiB of ramblocks allocates nothing for them before pages arrive', async (t) => {
  const dir = tmpdir(t);
  const { port, result } = await startReceiver({ outputDir: dir });
  result.catch(() => {});
  const raw = new RawSender(port);
  t.teardown(() => raw.close());
  const before = process.memoryUsage().arrayBuffers;
  // 64 blocks of 1 TiB: the page bitmaps were 32 MiB each, 2 GiB in all, allocated at the hello.
  t.match(await raw.hello({ ramblocks: Array.from({ length: 64 }, (_, i) => ({ name: `b${i}`, size: 2 ** 40 })) }), { type: 'ready' });
  const grew = process.memoryUsage().arrayBuffers - before;
  t.ok(grew < 16 << 20, `array buffers grew by ${grew} bytes (was 2 GiB)`);
  raw.close();
  t.match(await rejection(result), { code: 'ERR_CONTROL_CLOSED' });
});

import { ConnectionError } from '../../src/errors.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';

t.test('regression: a channel that never connects fails the migration after the timeout (it waited for ever)', async (t) => {
  const dir = tmpdir(t);
  const { port, result } = await startReceiver({ outputDir: dir, timeoutMs: 300 });
  result.catch(() => {});
  const raw = new RawSender(port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ channels: 2 }), { type: 'ready' });
  await raw.channel(encodeInitPacket(raw.uuidBytes, 0));
  // The fuzzer's case: channel 1's init packet cut short, so its connection never classifies as a channel.
  await raw.channel(Buffer.from(encodeInitPacket(raw.uuidBytes, 1)).subarray(0, 3));
  const e = await rejection(result);
  t.ok(e instanceof ConnectionError, 'typed');
  t.match(e, {
    code: 'ERR_CHANNEL_MISSING',
    channel: 1,
    message: 'not connected 300 ms after the hello was accepted (1 of 2 channels connected)',
  });
  t.match(await raw.control.next(), { type: 'error', code: 'ERR_CHANNEL_MISSING' }, 'the sender is told');
  t.same(fs.readdirSync(dir), [], 'no output left');
});

t.test('regression: a sender whose hello does not decode is told why (it only saw the connection close)', async (t) => {
  const dir = tmpdir(t);
  const { port, result } = await startReceiver({ outputDir: dir });
  result.catch(() => {});
  const raw = new RawSender(port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ channels: 0 }), {
    type: 'error',
    code: 'ERR_CONTROL_MESSAGE',
    message: 'control channel: hello.channels received 0, expected an integer in 1..255',
  });
  t.match(await rejection(result), { code: 'ERR_CONTROL_MESSAGE' });
});

import os from 'node:os';
import path from 'node:path';

/** Whether the temporary directory's filesystem refuses a 64 TiB file (ext4 does: 16 TiB at most). */
function refuses64TiB(): boolean {
  const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mfd-probe-')), 'probe');
  const fd = fs.openSync(f, 'w');
  try {
    fs.ftruncateSync(fd, 2 ** 46);
    return false;
  } catch {
    return true;
  } finally {
    fs.closeSync(fd);
    fs.rmSync(path.dirname(f), { recursive: true, force: true });
  }
}

t.test(
  'regression: an output the filesystem cannot size leaves no temporary file behind',
  { skip: refuses64TiB() ? false : 'this filesystem holds 64 TiB files' },
  async (t) => {
    const dir = tmpdir(t);
    const { port, result } = await startReceiver({ outputDir: dir });
    result.catch(() => {});
    const raw = new RawSender(port);
    t.teardown(() => raw.close());
    t.match(await raw.hello({ ramblocks: [{ name: 'huge', size: 2 ** 46 }] }), {
      type: 'error',
      code: 'ERR_EFBIG',
      message: /cannot create output for ram block "huge" at ".*\.huge\.mfd-partial": EFBIG/,
    });
    t.match(await rejection(result), { code: 'ERR_EFBIG' });
    t.same(fs.readdirSync(dir), [], 'the temporary file is gone (it was left behind)');
  },
);
