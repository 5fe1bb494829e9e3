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
  t.match(e, { code: 'ERR_CHANNEL_MISSING', channel: 1, message: 'channel 1: not connected 300 ms after the hello was accepted (1 of 2 channels connected)' });
  t.match(await raw.control.next(), { type: 'error', code: 'ERR_CHANNEL_MISSING' }, 'the sender is told');
  t.same(fs.readdirSync(dir), [], 'no output left');
});

t.test('regression: a sender whose hello does not decode is told why (it only saw the connection close)', async (t) => {
  const dir = tmpdir(t);
  const { port, result } = await startReceiver({ outputDir: dir });
  result.catch(() => {});
  const raw = new RawSender(port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ channels: 0 }), { type: 'error', code: 'ERR_CONTROL_MESSAGE', message: 'control channel: hello.channels received 0, expected an integer in 1..255' });
  t.match(await rejection(result), { code: 'ERR_CONTROL_MESSAGE' });
});
