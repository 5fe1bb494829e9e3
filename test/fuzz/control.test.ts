/** Fuzz: control-channel frames (decodeFrame, checkPreamble) and framing (ControlChannel), bounded runs with a fixed seed. */
import t from 'tap';
import { assertTarget, formatOutcomes } from '../helpers/fuzz/harness.js';
import { controlFrameTarget, controlStreamTarget } from '../helpers/fuzz/control.js';

t.test('fuzz: control frame decoding ends in a checked message or a typed error', async (t) => {
  const stats = await assertTarget(controlFrameTarget(), 3000);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
  t.ok(stats.outcomes.has('ok'), 'some frames decode');
});

t.test('fuzz: control framing ends in a typed error, never an unbounded queue', async (t) => {
  const stats = await assertTarget(controlStreamTarget(), 600);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
});

// Regressions: the minimal inputs the fuzzer found.
import path from 'node:path';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { ProtocolError } from '../../src/errors.js';
import { checkPreamble, decodeFrame, encodePreamble, MAX_TOTAL_RAM, type Complete } from '../../src/control/protocol.js';
import { ControlChannel, MAX_UNREAD_MESSAGES } from '../../src/transport/control-channel.js';
import { CONTROL_CORPUS } from '../helpers/fuzz/control.js';
import { makeImage, migrate, sha256, tmpdir } from '../helpers/index.js';

const frame = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const helloWith = (over: Record<string, unknown>): Buffer => frame({ ...CONTROL_CORPUS[0], ...over });

t.test('regression: a deeply nested value in a checked field is a ProtocolError, not a stack overflow', async (t) => {
  const deep = '['.repeat(10_000) + ']'.repeat(10_000);
  for (const body of [
    `{"type":"hello","version":${deep}}`,
    `{"type":"complete","packets":[${deep}],"digests":{}}`,
    `{"type":"error","code":${deep},"message":"x"}`,
    `{"type":${deep}}`,
  ]) {
    const e = t.throws(() => decodeFrame(Buffer.from(body)));
    t.ok(e instanceof ProtocolError, 'typed');
    t.match(e, { code: 'ERR_CONTROL_MESSAGE', message: /received an array of 1|unknown message type an array of 1/ });
  }
});

t.test('regression: an oversized value is described, not echoed into the error', async (t) => {
  const e = t.throws(() => decodeFrame(helloWith({ uuid: 'x'.repeat(1 << 20) }))) as Error;
  t.match(e, {
    code: 'ERR_CONTROL_MESSAGE',
    message: /^control channel: hello\.uuid received "x{80}\.\.\.", expected a string of at most 36 characters$/,
  });
  const big = t.throws(() => decodeFrame(helloWith({ channels: Array.from({ length: 100_000 }, () => 1) }))) as Error;
  t.equal(big.message, 'control channel: hello.channels received an array of 100000, expected an integer in 1..255');
});

t.test('regression: ramblocks named "__proto__" or "constructor" keep their digests', async (t) => {
  const m = decodeFrame(
    frame({ type: 'complete', packets: [1], digests: JSON.parse('{"__proto__":"0123456789abcdef","constructor":"fedcba9876543210"}') }),
  ) as Complete;
  t.equal(m.digests['__proto__'], '0123456789abcdef');
  t.equal(m.digests['constructor'], 'fedcba9876543210');
  t.equal(m.digests['toString'], undefined, 'a name the sender did not list finds nothing');
  const hello = decodeFrame(helloWith({ compression: 'zstd', methodParams: JSON.parse('{"__proto__":1}') }));
  t.same(
    hello.type === 'hello' && Object.keys(hello.methodParams),
    ['__proto__'],
    'a "__proto__" method parameter is kept, for the method to refuse',
  );
});

t.test('regression: an image named "__proto__" migrates and verifies', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'img'), 256 << 10, 'mixed');
  const out = path.join(dir, 'out');
  const { received } = await migrate(
    {
      images: [{ name: '__proto__', path: img }],
      channels: 1,
      pageSize: 4096,
      compression: 'none',
      methodParams: {},
      zeroPageDetection: 'multifd',
    },
    { outputMap: new Map([['__proto__', out]]) },
  );
  t.equal(received.stats.ramblocks[0]?.name, '__proto__');
  t.equal(sha256(out), sha256(img));
});

t.test('regression: verdict stats nested deeper than 16 levels are refused (the sender prints them)', async (t) => {
  let stats: unknown = 1;
  for (let i = 0; i < 16; i++) stats = { a: stats };
  t.same(decodeFrame(frame({ type: 'verdict', ok: true, stats })).type, 'verdict', '16 levels pass');
  t.throws(() => decodeFrame(frame({ type: 'verdict', ok: true, stats: { a: stats } })), {
    code: 'ERR_CONTROL_MESSAGE',
    message: 'control channel: verdict.stats nests deeper than 16 levels',
  });
  const deep = `{"type":"verdict","ok":true,"stats":${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}}`;
  t.throws(() => decodeFrame(Buffer.from(deep)), { code: 'ERR_CONTROL_MESSAGE' });
});

t.test('regression: a hello declaring more than 64 TiB of ramblocks is refused, naming the field', async (t) => {
  t.equal(MAX_TOTAL_RAM, 2 ** 46);
  t.throws(() => decodeFrame(helloWith({ ramblocks: [{ name: 'a', size: 2 ** 53 - 1 }] })), {
    code: 'ERR_CONTROL_MESSAGE',
    message: `control channel: hello.ramblocks[0].size received ${2 ** 53 - 1}, expected an integer in 0..${2 ** 46}`,
  });
  t.throws(
    () =>
      decodeFrame(
        helloWith({
          ramblocks: [
            { name: 'a', size: 2 ** 45 },
            { name: 'b', size: 2 ** 45 },
            { name: 'c', size: 1 },
          ],
        }),
      ),
    {
      code: 'ERR_CONTROL_MESSAGE',
      message: `control channel: hello.ramblocks[2].size brings the ramblocks to ${2 ** 46 + 1} bytes, expected at most ${2 ** 46} (64 TiB) in all`,
    },
  );
});

t.test('regression: a short or foreign preamble is a ProtocolError, not a RangeError', async (t) => {
  t.throws(() => checkPreamble(new Uint8Array(3)), {
    code: 'ERR_CONTROL_TRUNCATED',
    message: 'control channel: preamble of 3 bytes received, expected 8',
  });
  const p = encodePreamble();
  p[0] = 0;
  t.throws(() => checkPreamble(p), { code: 'ERR_CONTROL_MAGIC', message: 'control channel: received magic 0x464443, expected 0x4d464443' });
});

t.test('regression: a peer flooding messages nobody reads is refused after 16', async (t) => {
  const told: Buffer[] = [];
  const sock = Object.assign(new EventEmitter(), {
    destroyed: false,
    writable: true,
    write: () => true,
    end(b?: Buffer) {
      if (b) told.push(b);
      sock.writable = false;
    },
    destroy() {
      sock.destroyed = true;
    },
  });
  const ch = new ControlChannel(sock as unknown as Socket, 'test');
  const one = Buffer.concat([Buffer.from([0, 0, 0, 16]), Buffer.from('{"type":"ready"}')]);
  sock.emit('data', Buffer.concat(Array.from({ length: 100 }, () => one)));
  sock.emit('data', Buffer.concat(Array.from({ length: 100 }, () => one)));
  t.equal(told.length, 1, 'the peer is told once, and the connection half-closed');
  t.match(decodeFrame(told[0]!.subarray(4)), { type: 'error', code: 'ERR_CONTROL_FLOOD' });
  for (let i = 0; i < MAX_UNREAD_MESSAGES; i++) t.same(await ch.next(), { type: 'ready' });
  await t.rejects(ch.next(), {
    code: 'ERR_CONTROL_FLOOD',
    message: 'control channel: received a message with 16 unread, expected at most 16 unread',
  });
});
