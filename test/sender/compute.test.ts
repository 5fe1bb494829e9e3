/**
 * The compute workers' packet step (src/compute/worker.ts 'packet'): a worker
 * maps the image, finds the zero pages, CRCs every page and compresses the
 * rest into the slab it shares with the main thread (no buffer per packet),
 * under the pool's resource limits (a young generation of 3 MiB).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ComputePool, WORKER_RESOURCE_LIMITS } from '../../src/compute/pool.js';
import { sharedSlabViews, type PacketReply } from '../../src/compute/messages.js';
import { getMethod } from '../../src/methods/index.js';
import { native } from '../../src/native/load.js';
import { PathTally } from '../../src/offload/paths.js';

const PS = 4096;
const PER_PACKET = 128;

/** 128 pages: every third one zero, the others filled with their index (compressible). */
function image(dir: string): { file: string; bytes: Buffer } {
  const bytes = Buffer.alloc(PER_PACKET * PS);
  for (let p = 0; p < PER_PACKET; p++) if (p % 3 !== 0) bytes.fill(p, p * PS, (p + 1) * PS);
  const file = path.join(dir, 'image.ram');
  fs.writeFileSync(file, bytes);
  return { file, bytes };
}

t.test("every worker runs under the pool's resource limits", async (t) => {
  const pool = new ComputePool(2);
  t.teardown(() => pool.close());
  const limits = pool.resourceLimits();
  t.equal(limits.length, 2, 'one entry a worker');
  for (const [i, l] of limits.entries())
    t.equal(
      l.maxYoungGenerationSizeMb,
      WORKER_RESOURCE_LIMITS.maxYoungGenerationSizeMb,
      `worker ${i}: a young generation of ${WORKER_RESOURCE_LIMITS.maxYoungGenerationSizeMb} MiB, not V8's 48`,
    );
});

for (const method of ['zstd', 'lz4']) {
  t.test(`${method}: flags, CRCs and payload land in the shared slab`, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfd-compute-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const { file, bytes } = image(dir);
    const fd = fs.openSync(file, 'r');
    t.teardown(() => fs.closeSync(fd));
    const pool = new ComputePool(1);
    t.teardown(() => pool.close());
    const m = getMethod(method);
    await pool.call(0, {
      op: 'send-setup',
      channel: 0,
      channels: 1,
      method,
      pageSize: PS,
      params: m.params({}),
      detector: 'multifd',
      accelPaths: [],
      requireHardware: false,
    });
    const slab = sharedSlabViews(null, PER_PACKET, m.maxPayload(PER_PACKET, PS));
    slab.out.fill(0xee);
    const r = await pool.call<PacketReply>(0, {
      op: 'packet',
      channel: 0,
      fd,
      path: file,
      size: bytes.length,
      offset: 0,
      pages: PER_PACKET,
      slab: slab.shared,
      pagesPerPacket: PER_PACKET,
    });
    const zeroPages = [...Array(PER_PACKET).keys()].filter((p) => p % 3 === 0);
    t.equal(r.zeros, zeroPages.length, 'zero pages counted');
    t.same(
      [...slab.zero].flatMap((z, p) => (z ? [p] : [])),
      zeroPages,
      'the zero flags, written into the shared slab',
    );
    const crcs = [...Array(PER_PACKET).keys()].map((p) => native.crc32c(bytes.subarray(p * PS, (p + 1) * PS)));
    t.same([...slab.crc], crcs, 'every page CRC, written into the shared slab');
    t.ok(r.payloadBytes > 0 && r.payloadBytes < slab.out.length, `a payload of ${r.payloadBytes} bytes in the slab's room`);
    const normal = Buffer.concat([...Array(PER_PACKET).keys()].filter((p) => p % 3 !== 0).map((p) => bytes.subarray(p * PS, (p + 1) * PS)));
    const payload = Buffer.from(slab.out.subarray(0, r.payloadBytes));
    const rx = m.recvSetup({ channel: 0, pageSize: PS, params: m.params({}), tally: new PathTally('test', false) });
    const decoded = Buffer.concat(await rx.recv([payload], normal.length / PS, 0n));
    t.ok(decoded.equals(normal), 'the payload decodes to the normal pages, in order');
  });
}
