import t from 'tap';
import { checkInitPacket, decodeInitPacket, encodeInitPacket, uuidFromString, uuidToString } from '../../src/wire/init-packet.js';
import { ProtocolError } from '../../src/errors.js';

const uuid = uuidFromString('00112233-4455-6677-8899-aabbccddeeff');

t.test('init packet golden bytes', async (t) => {
  const b = Buffer.from(encodeInitPacket(uuid, 3));
  t.equal(b.length, 64);
  t.equal(b.toString('hex'), '11223344' + '00000001' + '00112233445566778899aabbccddeeff' + '03' + '00'.repeat(7) + '00'.repeat(32));
  const d = decodeInitPacket(b);
  t.same(
    { magic: d.magic, version: d.version, id: d.id, uuid: uuidToString(d.uuid) },
    { magic: 0x11223344, version: 1, id: 3, uuid: '00112233-4455-6677-8899-aabbccddeeff' },
  );
});

t.test('receiver checks, QEMU order and wording, id bound fixed', async (t) => {
  const expect = { uuid, channels: 4 };
  const good = decodeInitPacket(encodeInitPacket(uuid, 3));
  t.doesNotThrow(() => checkInitPacket(good, expect, 'channel 3'));
  const cases: [string, Partial<ReturnType<typeof decodeInitPacket>>, string, RegExp][] = [
    ['magic', { magic: 0xdeadbeef }, 'ERR_INIT_MAGIC', /received packet magic 0xdeadbeef, expected 0x11223344/],
    ['version', { version: 2 }, 'ERR_INIT_VERSION', /channel 3: received packet version 2, expected 1/],
    [
      'uuid',
      { uuid: new Uint8Array(16) },
      'ERR_INIT_UUID',
      /received uuid '00000000-0000-0000-0000-000000000000', expected uuid '00112233-4455-6677-8899-aabbccddeeff'/,
    ],
    ['id == channels (QEMU accepts it; we do not)', { id: 4 }, 'ERR_INIT_CHANNEL_ID', /received channel id 4, expected less than 4/],
    ['id > channels', { id: 200 }, 'ERR_INIT_CHANNEL_ID', /received channel id 200/],
  ];
  for (const [name, patch, code, msg] of cases) {
    t.throws(() => checkInitPacket({ ...good, ...patch }, expect, 'channel 3'), { name: 'ProtocolError', code, message: msg }, name);
  }
  t.type(new ProtocolError('X', 'y'), Error);
});

t.test('encoder refuses impossible values', async (t) => {
  t.throws(() => encodeInitPacket(new Uint8Array(15), 0), RangeError);
  t.throws(() => encodeInitPacket(uuid, 256), RangeError);
});
