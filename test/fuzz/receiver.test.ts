/** Fuzz: a live receiver fed mutated data-channel streams, and regressions for the receiver's peer-sized state. */
import t from 'tap';
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
