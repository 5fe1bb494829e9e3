/** Fuzz: every compression method's receiver decode, from its own sender's packets, mutated (test/helpers/fuzz/methods.ts). */
import { PathTally } from '../../src/offload/paths.js';
import t from 'tap';
import { assertTarget, formatOutcomes } from '../helpers/fuzz/harness.js';
import { methodNames, methodTarget } from '../helpers/fuzz/methods.js';

for (const method of methodNames()) {
  t.test(`fuzz: ${method} receiver decode ends in the packet's exact pages or a typed error`, async (t) => {
    const stats = await assertTarget(await methodTarget(method), 800);
    t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
    t.ok(stats.outcomes.has('ok'), 'unmutated and harmlessly mutated sessions decode');
  });
}

// Bounds on what a peer's payload may make a decoder allocate.
import { createRequire } from 'node:module';
import { getMethod } from '../../src/methods/index.js';
import { ZSTD_WINDOW_LOG_MAX } from '../../src/methods/zstd.js';

t.test('zstd: a frame asking for a window larger than level 20 uses is refused before the decoder allocates it', async (t) => {
  const z = createRequire(import.meta.url)('zstd-napi/binding') as typeof import('zstd-napi/binding.js');
  const frame = (level: number): Buffer => {
    const c = new z.CCtx();
    c.setParameter(z.CParameter.compressionLevel, level);
    const out = Buffer.alloc(8192);
    const [, wrote] = c.compressStream2(out, Buffer.alloc(4096, 0x61), z.EndDirective.flush);
    return out.subarray(0, wrote);
  };
  t.equal(ZSTD_WINDOW_LOG_MAX, 25);
  t.equal(10 + (frame(20)[5]! >> 3), 25, 'level 20 streams declare a 2^25 window');
  const rx = getMethod('zstd').recvSetup({ channel: 2, pageSize: 4096, params: {}, tally: new PathTally('test') });
  t.equal((await rx.recv([frame(20)], 1, 0n))[0]!.length, 4096, "QEMU's highest level decodes");
  const big = getMethod('zstd').recvSetup({ channel: 2, pageSize: 4096, params: {}, tally: new PathTally('test') });
  await t.rejects(
    Promise.resolve().then(() => big.recv([frame(22)], 1, 7n)),
    {
      code: 'ERR_PAYLOAD_CORRUPT',
      channel: 2,
      packetNum: 7n,
      message: /^zstd payload cannot be decoded: Frame requires too much memory/,
    },
  );
});
