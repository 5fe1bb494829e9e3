/**
 * The send pipeline's channel loop (src/sender/pipeline.ts): after a failure, run() settles only once
 * every packet it was still preparing has settled, since the caller then closes the images (their
 * mappings) and the compute pool under them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { SendPipeline, type ChannelSink } from '../../src/sender/pipeline.js';
import { ConnectionError, type MfdError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { tmpdir } from '../helpers/index.js';

const PS = 4096;

for (const compression of ['none', 'zstd'] as const) {
  t.test(`${compression}: a sink that fails: run() rejects only after the packets being prepared have settled`, async (t) => {
    const dir = tmpdir(t);
    const file = path.join(dir, 'image.ram');
    fs.writeFileSync(file, randomBytes(16 * 128 * PS)); // 16 packets
    const p = await SendPipeline.open({
      images: [{ name: 'mem', path: file }],
      channels: 1,
      pageSize: PS,
      compression,
      zeroPageDetection: 'multifd',
      logger: silentLogger,
    });
    t.teardown(() => p.close());
    // Each prepare (inline or on the worker) is held back a little, so some are in flight when the sink fails.
    const spy = p as unknown as Record<'prepareInline' | 'prepareOffloaded', (...a: unknown[]) => Promise<unknown>>;
    const key = compression === 'none' ? 'prepareInline' : 'prepareOffloaded';
    const real = spy[key].bind(p);
    let started = 0;
    let settled = 0;
    spy[key] = (...a: unknown[]) => {
      started++;
      return real(...a).finally(() => new Promise((r) => setTimeout(r, 50)).then(() => settled++));
    };
    const sink: ChannelSink = {
      write: async (pk) => {
        pk.done();
        throw new ConnectionError('ERR_TEST_SINK', 'the sink failed');
      },
      end: async () => {},
    };
    await p.addChannel(0, () => sink);
    let failure: MfdError | null = null;
    await t.rejects(
      p.run(
        (e) => (failure ??= e as MfdError),
        () => failure,
      ),
      { code: 'ERR_TEST_SINK' },
    );
    t.ok(started > 1, `packets were prepared ahead (${started})`);
    t.equal(settled, started, 'every packet being prepared settled before run() did');
  });
}
