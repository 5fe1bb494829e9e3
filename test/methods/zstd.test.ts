/**
 * zstd's per-channel window (src/methods/zstd.ts zstdWindowLog): the level's
 * own while all channels' contexts fit the budget, smaller past it; a stream
 * made so declares that window in its frame header and decodes as any other.
 */
import t from 'tap';
import { getMethod } from '../../src/methods/index.js';
import { zstdWindowLog } from '../../src/methods/zstd.js';
import { PathTally } from '../../src/offload/paths.js';

const PS = 4096;

t.test('the window shrinks with the channel count, never below 2^10', async (t) => {
  t.equal(zstdWindowLog(1), null, 'one channel: the level decides');
  t.equal(zstdWindowLog(4), null, 'four channels: the level decides');
  t.equal(zstdWindowLog(255), 15, '255 channels: 2^15');
  let last = 19;
  for (let n = 1; n <= 100_000; n = Math.ceil(n * 1.5)) {
    const log = zstdWindowLog(n) ?? 19;
    t.ok(log <= last && log >= 10, `${n} channels: 2^${log}`);
    last = log;
  }
});

/** The window a zstd frame header declares (RFC 8878: Window_Descriptor after the magic and the descriptor byte). */
function frameWindowLog(frame: Uint8Array): number {
  t.equal(Buffer.from(frame.subarray(0, 4)).readUInt32LE(0), 0xfd2fb528, 'a zstd frame');
  const fhd = frame[4]!;
  t.equal(fhd & 0x20, 0, 'with a window descriptor (not single-segment)');
  const wd = frame[5]!;
  return 10 + (wd >> 3);
}

for (const channels of [4, 255]) {
  t.test(`${channels} channels: the stream's window, and it decodes`, async (t) => {
    const m = getMethod('zstd');
    const params = m.params({});
    const tx = m.sendSetup({ channel: 0, channels, pageSize: PS, params, tally: new PathTally('t', false) });
    const rx = m.recvSetup({ channel: 0, pageSize: PS, params, tally: new PathTally('t', false) });
    const pages = Buffer.alloc(128 * PS);
    for (let i = 0; i < pages.length; i += 8) pages.writeUInt32LE((i * 2654435761) >>> 16, i);
    for (let packet = 0; packet < 3; packet++) {
      const payload = Buffer.concat(await tx.prepare([pages], 128));
      if (packet === 0) {
        const log = frameWindowLog(payload);
        if (channels === 255) t.equal(log, 15, 'the frame declares 2^15');
        else t.ok(log >= 19, `the level's window, 2^${log}`);
      }
      t.ok(Buffer.concat(await rx.recv([payload], 128, BigInt(packet))).equals(pages), `packet ${packet} decodes`);
    }
    tx.cleanup();
    rx.cleanup();
  });
}
