/**
 * Where an error happened is formatted once, by the CLI: its stderr line and --json error-desc say
 * "channel N, packet M: what" once, and the --json error keeps channel and packetNum as fields.
 */
import t from 'tap';
import fs from 'node:fs';
import { RawSender, tmpdir } from '../helpers/index.js';
import { mfdRecv } from '../helpers/procs.js';
import { encodeInitPacket } from '../../src/wire/init-packet.js';
import { encodePacketHeader } from '../../src/wire/packet.js';
import { MULTIFD_FLAG_ZSTD } from '../../src/wire/constants.js';

t.test('a packet with the wrong method flag: exit 3, the place said once, kept as fields in --json', async (t) => {
  const dir = tmpdir(t);
  const r = await mfdRecv(t, ['--output', dir, '--json']);
  const raw = new RawSender(r.port);
  t.teardown(() => raw.close());
  t.match(await raw.hello({ ramblocks: [{ name: 'vm.ram', size: 1 << 20 }] }), { type: 'ready' });
  const header = encodePacketHeader(new Uint8Array(1344), 1344, {
    flags: MULTIFD_FLAG_ZSTD,
    pagesAlloc: 128,
    normalPages: 1,
    zeroPages: 0,
    nextPacketSize: 4096,
    packetNum: 3n,
    ramblock: Buffer.from('vm.ram'),
    offsets: [0],
  });
  await raw.channel(encodeInitPacket(raw.uuidBytes, 0), header, Buffer.alloc(4096, 1));
  const told = await raw.control.next();
  t.match(
    told,
    { type: 'error', code: 'ERR_PACKET_METHOD', message: /^channel 0, packet 3: flags received 0x4, expected 0x0/ },
    'the sender is told where',
  );
  const x = await r.done;
  t.equal(x.code, 3, 'exit 3 (protocol)');
  const line = x.stderr.split('\n').find((l) => l.startsWith('mfd recv: error: '));
  t.match(line, /^mfd recv: error: channel 0, packet 3: flags received 0x4, expected 0x0.* \[ERR_PACKET_METHOD\]$/);
  t.equal(line?.split('channel 0').length, 2, `the place once: ${line}`);
  const out = JSON.parse(x.stdout) as { 'error-desc': string; error: Record<string, unknown> };
  t.match(out, {
    status: 'failed',
    'error-desc': /^channel 0, packet 3: flags received 0x4, expected 0x0/,
    error: { name: 'ProtocolError', code: 'ERR_PACKET_METHOD', channel: 0, packetNum: 3, message: /^flags received 0x4, expected 0x0/ },
  });
  t.equal(out['error-desc'].split('channel 0').length, 2, 'error-desc says the place once');
  t.same(fs.readdirSync(dir), [], 'no output left');
});
