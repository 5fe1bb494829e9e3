/** Fuzz: init packet and packet header decoders (test/helpers/fuzz/wire.ts), bounded runs with a fixed seed. */
import t from 'tap';
import { assertTarget, formatOutcomes } from '../helpers/fuzz/harness.js';
import { initPacketTarget, packetHeaderTarget } from '../helpers/fuzz/wire.js';

t.test('fuzz: init packet decode and checks end in success or a typed error', async (t) => {
  const stats = await assertTarget(initPacketTarget(), 3000);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
  t.ok(stats.outcomes.has('ok'), 'some inputs pass every check');
});

t.test('fuzz: packet header decode and checkPacketHeader end in success or a typed error', async (t) => {
  const stats = await assertTarget(packetHeaderTarget(), 5000);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
  t.ok(stats.outcomes.has('ok'), 'some inputs pass every check');
});

// Regressions: the minimal inputs the fuzzer found.
import { ProtocolError } from '../../src/errors.js';
import { decodeInitPacket } from '../../src/wire/init-packet.js';
import { checkPacketHeader, decodePacketHeader, encodePacketHeader } from '../../src/wire/packet.js';
import { headerContext } from '../helpers/fuzz/wire.js';

t.test('regression: a short init packet is a ProtocolError, not a RangeError', async (t) => {
  t.throws(
    () => decodeInitPacket(Buffer.from([0])),
    new ProtocolError('ERR_INIT_TRUNCATED', 'init packet of 1 bytes received, expected 64'),
  );
});

t.test('regression: a short packet header is a ProtocolError, not a RangeError', async (t) => {
  const e = t.throws(() => decodePacketHeader(new Uint8Array(319), 128));
  t.ok(e instanceof ProtocolError);
  t.match(e, { code: 'ERR_PACKET_TRUNCATED', message: 'packet header of 319 bytes received, expected at least 320' });
});

t.test('regression: a header cut inside its offsets is refused for the offsets it lacks, not as "offset undefined"', async (t) => {
  const full = encodePacketHeader(new Uint8Array(1344), 1344, {
    flags: 0,
    pagesAlloc: 128,
    normalPages: 2,
    zeroPages: 0,
    nextPacketSize: 8192,
    packetNum: 5n,
    ramblock: Buffer.from('pc.ram'),
    offsets: [0, 4096],
  });
  const h = decodePacketHeader(full.subarray(0, 328), 128);
  t.equal(h.offsets.length, 1);
  t.throws(() => checkPacketHeader(h, headerContext(4096, 'none', 3)), {
    code: 'ERR_PACKET_TRUNCATED',
    channel: 3,
    packetNum: 5n,
    message: 'header holds 1 offsets, received 2 pages (2 normal, 0 zero)',
  });
});
