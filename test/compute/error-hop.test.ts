/** The worker-to-main hop keeps an error's class and fields: nothing is read back out of a message. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir } from '../helpers/index.js';
import { ComputePool } from '../../src/compute/pool.js';
import { reviveError, serializeError } from '../../src/compute/error-hop.js';
import { sharedSlabViews } from '../../src/compute/messages.js';
import { getMethod } from '../../src/methods/index.js';
import type { Worker } from 'node:worker_threads';
import { ExitCode, IoError, MfdError, NativeIoError, ProtocolError, errorText } from '../../src/errors.js';

t.test('serialize and revive: class, code, exit code, channel and packet as fields', async (t) => {
  const p = reviveError(
    serializeError(new ProtocolError('ERR_PACKET_FLAGS', 'flags received 0x100, expected 0x0', { channel: 1, packetNum: 3n })),
  );
  t.ok(p instanceof ProtocolError);
  t.match(p, {
    code: 'ERR_PACKET_FLAGS',
    exitCode: ExitCode.PROTOCOL,
    channel: 1,
    packetNum: 3n,
    message: 'flags received 0x100, expected 0x0',
  });
  t.equal(errorText(p), 'channel 1, packet 3: flags received 0x100, expected 0x0', 'the place once, not twice');

  const io = reviveError(serializeError(new IoError('ERR_EIO', 'reading image "a" at byte 0: EIO', undefined, { channel: 4 })));
  t.ok(io instanceof IoError);
  t.match(io, { code: 'ERR_EIO', exitCode: ExitCode.IO, channel: 4 });

  const native = new NativeIoError('ESHORTREAD', { on: 'pages', op: 'copy' });
  const back = reviveError(structuredClone(serializeError(native)));
  t.ok(back instanceof NativeIoError, 'a native failure stays one, for its caller to judge');
  t.match(back, { code: 'ESHORTREAD', on: 'pages', op: 'copy', message: native.message });

  const bug = reviveError(serializeError(new TypeError('boom')));
  t.ok(bug instanceof MfdError);
  t.match(bug, { code: 'ERR_INTERNAL', exitCode: ExitCode.INTERNAL, message: /TypeError: boom/ });
});

t.test('through a real compute worker', async (t) => {
  const pool = new ComputePool(1);
  t.teardown(() => pool.close());
  const zlib = getMethod('zlib');
  await pool.call(3, { op: 'recv-setup', channel: 3, method: 'zlib', pageSize: 4096, params: zlib.params({}), requireHardware: false });
  const bad = new Uint8Array(new SharedArrayBuffer(64)).fill(0xa5);
  const out = new Uint8Array(new SharedArrayBuffer(4096));
  const e = await pool.call(3, { op: 'decode', channel: 3, payload: bad, out, normal: 1, packetNum: 9n }).catch((x: unknown) => x);
  t.ok(e instanceof ProtocolError, 'the same class on this side');
  t.match(e, { code: /^ERR_PAYLOAD_/, channel: 3, packetNum: 9n, message: /^zlib payload/ });
  t.equal(errorText(e).indexOf('channel 3, packet 9: '), 0);
  t.equal(errorText(e).lastIndexOf('channel 3'), 0, 'the place once');

  // An image shorter than its declared size: the worker's IoError crosses as one, exit code and all.
  const file = path.join(tmpdir(t), 'img');
  fs.writeFileSync(file, Buffer.alloc(4096, 1));
  const fd = fs.openSync(file, 'r');
  t.teardown(() => fs.closeSync(fd));
  await pool.call(0, {
    op: 'send-setup',
    channel: 0,
    channels: 1,
    method: 'none',
    pageSize: 4096,
    params: getMethod('none').params({}),
    detector: 'multifd',
    accelPaths: [],
    requireHardware: false,
  });
  const shrank = await pool
    .call(0, {
      op: 'packet',
      channel: 0,
      fd,
      path: file,
      size: 64 * 4096,
      offset: 0,
      pages: 64,
      slab: sharedSlabViews(null, 128, 64 * 4096).shared,
      pagesPerPacket: 128,
    })
    .catch((x: unknown) => x);
  t.ok(shrank instanceof IoError);
  t.match(shrank, { code: 'ERR_IMAGE_SHRANK', exitCode: ExitCode.IO, message: /shrank while sending/ });
});

t.test('close() fails the calls still unanswered once the workers have exited, so nothing waits on them for ever', async (t) => {
  const pool = new ComputePool(1);
  const zlib = getMethod('zlib');
  const n = 200;
  let settled = 0;
  const calls = Array.from({ length: n }, (_, i) =>
    pool
      .call(i, { op: 'recv-setup', channel: i, method: 'zlib', pageSize: 4096, params: zlib.params({}), requireHardware: false })
      .then(
        () => 'answered',
        (e: unknown) => e,
      )
      .finally(() => settled++),
  );
  await pool.close();
  await new Promise((r) => setImmediate(r));
  t.equal(settled, n, 'every call settled once close() has');
  const failed = (await Promise.all(calls)).filter((r) => r !== 'answered');
  t.same(
    failed.map((e) => (e as MfdError).code),
    failed.map(() => 'ERR_WORKER'),
    'an unanswered call fails with ERR_WORKER',
  );
  t.comment(`${n - failed.length} answered before the worker stopped, ${failed.length} failed`);
  const later = await pool.call(0, { op: 'cleanup', channel: 0 }).catch((x: unknown) => x);
  t.match(later, { code: 'ERR_WORKER' }, 'a call after close() fails at once');
});

t.test('a worker that exits on its own fails its calls and every later one, naming it, instead of leaving them waiting', async (t) => {
  const pool = new ComputePool(2);
  t.teardown(() => pool.close());
  const zlib = getMethod('zlib');
  const setup = (channel: number): Promise<unknown> =>
    pool.call(channel, { op: 'recv-setup', channel, method: 'zlib', pageSize: 4096, params: zlib.params({}), requireHardware: false });
  await setup(1);
  // Stopped from outside, as an exit inside the worker would: an 'exit' without an 'error'.
  const worker = (pool as unknown as { workers: Worker[] }).workers[1]!;
  const stopped = worker.terminate();
  const pending = setup(3).catch((x: unknown) => x);
  await stopped;
  t.match(await pending, {
    code: 'ERR_WORKER',
    exitCode: ExitCode.INTERNAL,
    message: /^compute worker 1 exited \(code \d+\) with its calls unanswered$/,
  });
  t.match(await setup(0).catch((x: unknown) => x), { code: 'ERR_WORKER' }, 'a later call, even to a worker still running, fails at once');
});
