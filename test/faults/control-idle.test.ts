/**
 * Every wait of the receiver on its control channel has an end (--timeout):
 * a peer that connects and sends no hello (or half of one) is dropped after
 * the timeout and the next sender is served; a sender that says hello and
 * then nothing fails the migration; one whose channels all end without a
 * `complete` fails it too. Each with a clear error, nothing left that looks
 * complete. With --resume-wait the receiver then serves the next sender: a
 * new migration after the silent one, a resume after the one that ended
 * without `complete`.
 */
import type { Test } from 'tap';
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { captureLogger } from '../helpers/auth.js';
import { RawSender, makeImage, rejection, sha256, startReceiver, tmpdir } from '../helpers/index.js';
import { send } from '../../src/sender/sender.js';
import { silentLogger } from '../../src/log.js';
import { connect } from '../../src/transport/connect.js';
import { ControlChannel } from '../../src/transport/control-channel.js';
import { encodeFrame, encodePreamble } from '../../src/control/protocol.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { encodePacketHeader } from '../../src/wire/packet.js';
import { MULTIFD_FLAG_SYNC, packetHeaderSize } from '../../src/wire/constants.js';
import { ExitCode } from '../../src/errors.js';
import { imageSource } from '../../src/image/resume.js';

const TIMEOUT_MS = 1000;

async function receiver(t: Test, resumeWaitMs = 0) {
  const dir = tmpdir(t);
  const { logger, lines } = captureLogger('warn');
  const { port, result } = await startReceiver({ outputDir: dir, timeoutMs: TIMEOUT_MS, logger, resumeWaitMs });
  result.catch(() => {});
  return { dir, port, result, lines };
}

/** A SYNC packet (header only), the channel's last. */
function syncPacket(packetNum: bigint): Uint8Array {
  const hs = packetHeaderSize(4096);
  return encodePacketHeader(new Uint8Array(hs), hs, {
    flags: MULTIFD_FLAG_SYNC,
    pagesAlloc: 0,
    normalPages: 0,
    zeroPages: 0,
    nextPacketSize: 0,
    packetNum,
    ramblock: new Uint8Array(0),
    offsets: [],
  });
}

/** A control connection that sends the preamble and `then`, and reads what the receiver says. */
async function silentPeer(port: number, then: Buffer = Buffer.alloc(0)) {
  const sock = await connect('127.0.0.1', port, 2000, 'control');
  sock.on('error', () => {});
  const ctl = new ControlChannel(sock, 'test');
  sock.write(Buffer.concat([encodePreamble(), then]));
  return { sock, ctl };
}

for (const [what, then] of [
  ['no hello', Buffer.alloc(0)],
  ['half a hello frame', encodeFrame({ type: 'hello' } as never).subarray(0, 10)],
] as const) {
  t.test(`a control peer that sends ${what} is dropped after --timeout; the next sender is served`, async (t) => {
    const r = await receiver(t);
    const silent = await silentPeer(r.port, then);
    t.teardown(() => silent.sock.destroy());
    const since = performance.now();
    // Meanwhile the receiver is busy with it...
    const busy = new RawSender(r.port);
    t.teardown(() => busy.close());
    t.match(await busy.hello(), { type: 'error', code: 'ERR_BUSY' }, 'a sender meanwhile is told the receiver is busy');
    // ...until the timeout, when the silent peer is told why and dropped.
    t.match(await silent.ctl.next(), { type: 'error', code: 'ERR_CONTROL_TIMEOUT', message: /no hello within 1000 ms/ });
    const took = performance.now() - since;
    t.ok(took >= TIMEOUT_MS * 0.9 && took < TIMEOUT_MS + 5000, `dropped after ${Math.round(took)} ms`);
    t.ok(
      r.lines.some((l) => /dropped: no hello within 1000 ms of connecting; waiting for another sender/.test(String(l.msg))),
      'logged',
    );
    const img = makeImage(path.join(tmpdir(t), 'a'), 1 << 20, 'mixed');
    await send({
      host: '127.0.0.1',
      port: r.port,
      logger: silentLogger,
      images: [{ name: 'a', path: img }],
      channels: 2,
      pageSize: 4096,
      compression: 'none',
      methodParams: {},
      zeroPageDetection: 'multifd',
    });
    await r.result;
    t.equal(sha256(path.join(r.dir, 'a')), sha256(img), 'the next sender migrated');
  });
}

t.test('hello, then silence: the migration fails after --timeout naming the missing channels', async (t) => {
  const r = await receiver(t);
  const raw = new RawSender(r.port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ channels: 2 }), { type: 'ready' });
  const since = performance.now();
  const e = await rejection(r.result);
  const took = performance.now() - since;
  t.match(e, {
    code: 'ERR_CHANNEL_MISSING',
    exitCode: ExitCode.CONNECTION,
    channel: 0,
    message: /not connected 1000 ms after the hello was accepted \(0 of 2 channels connected\)/,
  });
  t.ok(took < TIMEOUT_MS + 5000, `within ${Math.round(took)} ms`);
  t.match(await raw.control.next(), { type: 'error', code: 'ERR_CHANNEL_MISSING' }, 'the sender is told');
  t.same(fs.readdirSync(r.dir), [], 'nothing left');
});

t.test('channels that end without a complete: the migration fails after --timeout', async (t) => {
  const r = await receiver(t);
  const raw = new RawSender(r.port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ channels: 1, ramblocks: [{ name: 'ram0', size: 4096 }] }), { type: 'ready' });
  const hs = packetHeaderSize(4096);
  const page = encodePacketHeader(new Uint8Array(hs), hs, {
    flags: 0,
    pagesAlloc: 128,
    normalPages: 0,
    zeroPages: 1,
    nextPacketSize: 0,
    packetNum: 0n,
    ramblock: Buffer.from('ram0'),
    offsets: [0],
  });
  const sync = syncPacket(1n);
  const ch = await raw.channel(encodeInitPacket(raw.uuidBytes, 0), page, sync);
  ch.end();
  const since = performance.now();
  const e = await rejection(r.result);
  const took = performance.now() - since;
  t.match(e, {
    code: 'ERR_CONTROL_TIMEOUT',
    exitCode: ExitCode.CONNECTION,
    message: /all 1 channel ended 1000 ms ago, but no "complete" came from the sender/,
  });
  t.ok(took >= TIMEOUT_MS * 0.9 && took < TIMEOUT_MS + 5000, `after ${Math.round(took)} ms`);
  t.match(await raw.control.next(), { type: 'error', code: 'ERR_CONTROL_TIMEOUT' }, 'the sender is told');
  t.notOk(fs.existsSync(path.join(r.dir, 'ram0')), 'no output under its final name');
});

/** Sends `img` as block `name` to the receiver at `port`, as `mfd send` would. */
function sendImage(port: number, name: string, img: string, resume = false) {
  return send({
    host: '127.0.0.1',
    port,
    logger: silentLogger,
    images: [{ name, path: img }],
    channels: 2,
    pageSize: 4096,
    compression: 'none',
    methodParams: {},
    zeroPageDetection: 'multifd',
    ...(resume ? { resume: true } : {}),
  });
}

t.test('hello, then silence, with --resume-wait: the migration fails and the next sender is served', async (t) => {
  const r = await receiver(t, 30_000);
  const raw = new RawSender(r.port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ channels: 2 }), { type: 'ready' });
  t.match(
    await raw.control.next(),
    { type: 'error', code: 'ERR_CHANNEL_MISSING', message: /not connected 1000 ms after the hello was accepted/ },
    'the silent sender is told',
  );
  const img = makeImage(path.join(tmpdir(t), 'b'), 1 << 20, 'mixed');
  await sendImage(r.port, 'b', img);
  await r.result;
  t.ok(
    r.lines.some((l) =>
      /migration failed \(.*not connected 1000 ms.*\) with nothing kept: waiting 30 s on 127\.0\.0\.1:\d+ for the next sender/.test(
        String(l.msg),
      ),
    ),
    'logged, with what came next (the log follows the cleanup, so it is read once the next sender is done)',
  );
  t.equal(sha256(path.join(r.dir, 'b')), sha256(img), 'the next sender migrated');
});

t.test('channels that end without a complete, with --resume-wait: the migration fails and the next sender resumes it', async (t) => {
  const r = await receiver(t, 30_000);
  const raw = new RawSender(r.port);
  t.teardown(() => raw.close());
  const img = makeImage(path.join(tmpdir(t), 'ram0'), 1 << 20, 'mixed');
  // The image's identity as mfd send gives it, so the resume below is of the same image.
  const fd = fs.openSync(img, 'r');
  const source = imageSource(fd);
  fs.closeSync(fd);
  t.match(await raw.hello({ channels: 1, ramblocks: [{ name: 'ram0', size: 1 << 20, source }] }), { type: 'ready' });
  const hs = packetHeaderSize(4096);
  // The image's first page, as a zero page if it is one and as data if not.
  const first = fs.readFileSync(img).subarray(0, 4096);
  const zero = first.every((b) => b === 0);
  const page = encodePacketHeader(new Uint8Array(hs), hs, {
    flags: 0,
    pagesAlloc: 128,
    normalPages: zero ? 0 : 1,
    zeroPages: zero ? 1 : 0,
    nextPacketSize: zero ? 0 : 4096,
    packetNum: 0n,
    ramblock: Buffer.from('ram0'),
    offsets: [0],
  });
  const sync = syncPacket(1n);
  const ch = await raw.channel(encodeInitPacket(raw.uuidBytes, 0), page, ...(zero ? [] : [first]), sync);
  ch.end();
  t.match(
    await raw.control.next(),
    { type: 'error', code: 'ERR_CONTROL_TIMEOUT', message: /no "complete" came from the sender/ },
    'the sender is told',
  );
  await sendImage(r.port, 'ram0', img, true);
  await r.result;
  t.ok(
    r.lines.some((l) =>
      /migration failed \(.*no "complete" came.*\) with its progress journal kept: waiting 30 s on 127\.0\.0\.1:\d+ for mfd send --resume/.test(
        String(l.msg),
      ),
    ),
    'logged, with what came next (the log follows the cleanup, so it is read once the next sender is done)',
  );
  t.equal(sha256(path.join(r.dir, 'ram0')), sha256(img), 'the next sender migrated');
});
