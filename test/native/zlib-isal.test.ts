/**
 * The zlib method's ISA-L (igzip) engine: its deflate output is a standard zlib stream that Node's
 * zlib reads per channel with a sync flush per packet, and its inflater reads streams that zlib made
 * (every level, window size and block type, chunked as a socket delivers them). Skipped, with the
 * reason, when ISA-L is not available (built without libisal-dev, or no libisal.so.2 on this host).
 */
import t from 'tap';
import zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { native } from '../../src/native/load.js';
import { getMethod } from '../../src/methods/index.js';
import { ISAL_LEVEL_FOR } from '../../src/methods/zlib.js';
import { PathTally } from '../../src/offload/paths.js';

const PS = 4096;
const skip = native.isalVersion === null ? `ISA-L is not available: ${native.isalUnavailable}` : false;
const SYNC_MARKER = Buffer.from([0x00, 0x00, 0xff, 0xff]);

/** Page i of a reproducible mix: text-like, random, a repeated pattern, runs of one byte. */
function page(i: number): Buffer {
  const p = Buffer.alloc(PS);
  switch (i % 4) {
    case 0:
      p.write(`page ${i}: `.concat('the quick brown fox jumps over the lazy dog '.repeat(100)).slice(0, PS));
      break;
    case 1:
      randomBytes(PS).copy(p);
      break;
    case 2:
      for (let j = 0; j < PS; j++) p[j] = (j * 7 + i) & 0x3f;
      break;
    default:
      p.fill(i & 0xff, 0, PS / 2);
      p.write(`tail of ${i}`, PS / 2);
  }
  return p;
}

/** Packets of 1..9 pages for `channels` channels, round-robin, as runs of whole pages. */
function packets(count: number, channels: number): { channel: number; runs: Buffer[] }[] {
  const out: { channel: number; runs: Buffer[] }[] = [];
  let n = 0;
  for (let k = 0; k < count; k++) {
    const pages = 1 + (k % 9);
    const packet = Buffer.concat(Array.from({ length: pages }, () => page(n++)));
    // split into two runs when it can, as the sender hands over non-contiguous pages
    const cut = Math.floor(pages / 2) * PS;
    out.push({ channel: k % channels, runs: cut > 0 ? [packet.subarray(0, cut), packet.subarray(cut)] : [packet] });
  }
  return out;
}

/** zlib's deflate on one stream, with Z_SYNC_FLUSH after each chunk: one payload per chunk. */
async function zlibPayloads(chunks: Buffer[], opts: zlib.ZlibOptions): Promise<Buffer[]> {
  const d = zlib.createDeflate(opts);
  const payloads: Buffer[] = [];
  let pending: Buffer[] = [];
  d.on('data', (b: Buffer) => pending.push(b));
  for (const c of chunks) {
    d.write(c);
    await new Promise<void>((resolve) => d.flush(zlib.constants.Z_SYNC_FLUSH, () => resolve()));
    payloads.push(Buffer.concat(pending));
    pending = [];
  }
  d.destroy();
  return payloads;
}

/** Splits a payload into pieces of 1..700 bytes, as socket reads would. */
function chunked(b: Buffer, seed: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, k = seed; at < b.length; k++) {
    const n = 1 + (((k * 2654435761) >>> 0) % 700);
    out.push(b.subarray(at, at + n));
    at += n;
  }
  return out;
}

function receiver(channel = 0) {
  return getMethod('zlib').recvSetup({ channel, pageSize: PS, params: { level: 1 }, tally: new PathTally('zlib compression') });
}

t.test('ISA-L deflate: Node zlib reads every channel, packet by packet, at each ISA-L level', { skip }, async (t) => {
  const channels = 3;
  const list = packets(60, channels);
  for (const level of [1, 2, 3]) {
    const streams = Array.from({ length: channels }, () => new native.ZlibStream(false, level, 'isal'));
    const sent: Buffer[][] = Array.from({ length: channels }, () => []);
    const plain: Buffer[][] = Array.from({ length: channels }, () => []);
    for (const { channel, runs } of list) {
      const bytes = runs.reduce((a, r) => a + r.length, 0);
      const out = Buffer.alloc(native.zlibCompressBound(bytes));
      const n = streams[channel]!.deflatePages(runs, PS, out);
      const payload = out.subarray(0, n);
      t.ok(payload.subarray(-4).equals(SYNC_MARKER), `level ${level}: each payload ends with the sync flush`);
      sent[channel]!.push(Buffer.from(payload));
      plain[channel]!.push(Buffer.concat(runs));
      // a prefix of the stream decodes to exactly the packets so far: nothing held back past a packet
      const got = zlib.inflateSync(Buffer.concat(sent[channel]!), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
      if (!got.equals(Buffer.concat(plain[channel]!)))
        t.fail(`level ${level}, channel ${channel}: packet ${sent[channel]!.length} decodes differently`);
    }
    for (let c = 0; c < channels; c++)
      t.equal(sent[c]![0]![0], 0x78, `level ${level}, channel ${c}: a zlib header (deflate, 32 KiB window) opens the stream`);
    for (const s of streams) s.close();
  }
});

t.test('ISA-L deflate: random and random-looking runs alternating in a packet stay within the bound', { skip }, async (t) => {
  // 8 random pages, then 8 whose first 512 bytes look like text and the rest is random: the
  // classifier's worst case, a flush between every run, and blocks igzip has to store.
  const pages = 128;
  const packet = randomBytes(pages * PS);
  for (let i = 8; i < pages; i += 16) for (let j = i; j < i + 8; j++) packet.fill(0x61, j * PS, j * PS + 512);
  const s = new native.ZlibStream(false, 1, 'isal');
  const payloads: Buffer[] = [];
  for (let k = 0; k < 4; k++) {
    const out = Buffer.alloc(native.zlibCompressBound(packet.length));
    payloads.push(Buffer.from(out.subarray(0, s.deflatePages([packet], PS, out))));
  }
  t.ok(
    payloads.every((p) => p.length <= native.zlibCompressBound(packet.length)),
    `payloads ${payloads.map((p) => p.length).join(', ')} bytes for ${packet.length}`,
  );
  const got = zlib.inflateSync(Buffer.concat(payloads), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  t.ok(got.equals(Buffer.concat([packet, packet, packet, packet])), 'Node zlib reads them');
  s.close();
});

t.test(
  'the zlib method deflates with ISA-L at levels 1..3 and zlib elsewhere; both decode with Node zlib and the ISA-L inflater',
  { skip },
  async (t) => {
    t.same(ISAL_LEVEL_FOR, { 1: 1, 2: 1, 3: 3 });
    const method = getMethod('zlib');
    const list = packets(20, 1).map((p) => p.runs);
    for (const level of [0, 1, 2, 3, 4, 6, 9]) {
      const tally = new PathTally('zlib compression');
      const s = method.sendSetup({ channel: 0, pageSize: PS, params: { level }, tally });
      const r = receiver();
      const payloads: Buffer[] = [];
      for (const runs of list) {
        const pages = runs.reduce((a, x) => a + x.length, 0) / PS;
        const payload = Buffer.concat(await s.prepare(runs, pages));
        payloads.push(payload);
        const out = Buffer.concat(await r.recv(chunked(payload, pages), pages, BigInt(payloads.length)));
        if (!out.equals(Buffer.concat(runs))) t.fail(`level ${level}: packet ${payloads.length} round trip differs`);
      }
      const all = zlib.inflateSync(Buffer.concat(payloads), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
      t.ok(all.equals(Buffer.concat(list.flat())), `level ${level}: Node zlib reads the whole stream`);
      s.cleanup();
      r.cleanup();
    }
  },
);

t.test('the ISA-L inflater reads zlib-made streams: levels, windows, strategies, stored blocks', { skip }, async (t) => {
  const list = packets(24, 1).map((p) => Buffer.concat(p.runs));
  const cases: [string, zlib.ZlibOptions][] = [
    ['level 0 (stored blocks)', { level: 0 }],
    ['level 1', { level: 1 }],
    ['level 6', { level: 6 }],
    ['level 9', { level: 9, memLevel: 9 }],
    ['level 1, 512-byte window', { level: 1, windowBits: 9 }],
    ['level 6, 4 KiB window', { level: 6, windowBits: 12 }],
    ['fixed Huffman blocks', { level: 6, strategy: zlib.constants.Z_FIXED }],
    ['Huffman only', { level: 6, strategy: zlib.constants.Z_HUFFMAN_ONLY }],
    ['run-length matches', { level: 6, strategy: zlib.constants.Z_RLE }],
  ];
  for (const [name, opts] of cases) {
    const payloads = await zlibPayloads(list, opts);
    const r = receiver();
    let ok = true;
    for (let k = 0; k < list.length; k++) {
      const out = Buffer.concat(await r.recv(chunked(payloads[k]!, k), list[k]!.length / PS, BigInt(k + 1)));
      if (!out.equals(list[k]!)) ok = false;
    }
    t.ok(ok, `${name}: every packet decodes to its pages`);
    r.cleanup();
  }
});

t.test('the ISA-L inflater refuses corrupt, oversized, finished and dictionary streams', { skip }, async (t) => {
  const list = packets(4, 1).map((p) => Buffer.concat(p.runs));
  const payloads = await zlibPayloads(list, { level: 6 });
  const pagesOf = (k: number): number => list[k]!.length / PS;

  const bad = Buffer.from(payloads[0]!);
  bad.fill(0xff, 2, 40); // the first block's header and codes
  await t.rejects(async () => receiver(2).recv([bad], pagesOf(0), 1n), { code: 'ERR_PAYLOAD_CORRUPT', channel: 2 });

  const header = Buffer.from(payloads[0]!);
  header[0] = 0x79; // compression method 9: not deflate
  await t.rejects(async () => receiver().recv([header], pagesOf(0), 1n), { code: 'ERR_PAYLOAD_CORRUPT' });

  // one page fewer expected than the packet holds: more output than the packet's pages
  const four = (await zlibPayloads([list[3]!], { level: 6 }))[0]!;
  t.equal(pagesOf(3), 4);
  await t.rejects(async () => receiver().recv([four], 3, 1n), { code: 'ERR_PAYLOAD_SIZE', message: /more output/ });
  await t.rejects(async () => receiver().recv(chunked(four, 3), 3, 1n), { code: 'ERR_PAYLOAD_SIZE', message: /more output/ });
  // the packet cut short: less output than its pages
  const r = receiver();
  await t.rejects(async () => r.recv([payloads[0]!.subarray(0, payloads[0]!.length >> 1)], pagesOf(0), 1n), { code: 'ERR_PAYLOAD_SIZE' });

  const finished = zlib.deflateSync(list[0]!);
  await t.rejects(async () => receiver().recv([finished], pagesOf(0), 1n), { code: 'ERR_PAYLOAD_CORRUPT', message: /never end/ });

  const withDict = zlib.deflateSync(list[0]!, { dictionary: Buffer.from('a preset dictionary') });
  await t.rejects(async () => receiver().recv([withDict], pagesOf(0), 1n), { code: 'ERR_PAYLOAD_CORRUPT', message: /dictionary/ });

  // and a good stream still decodes after the refusals on other streams
  const good = receiver();
  for (let k = 0; k < list.length; k++)
    t.ok(Buffer.concat(await good.recv([payloads[k]!], pagesOf(k), BigInt(k + 1))).equals(list[k]!), `packet ${k + 1}`);
});

t.test('the path says which implementation runs', async (t) => {
  const path = (level: number): string => getMethod('zlib').path({ params: { level }, requireHardware: false });
  if (native.isalVersion === null) {
    t.equal(path(1), `software: zlib ${native.zlibVersion} (level 1)`);
    t.throws(() => new native.ZlibStream(false, 1, 'isal'), { code: 'ERR_ZLIB', message: native.isalUnavailable! });
    return;
  }
  t.equal(path(1), `software: isa-l igzip ${native.isalVersion} (level 1 -> isal 1)`);
  t.equal(path(3), `software: isa-l igzip ${native.isalVersion} (level 3 -> isal 3)`);
  t.equal(
    path(4),
    `software: zlib ${native.zlibVersion} deflate (level 4: no isal level within 5%), isa-l igzip ${native.isalVersion} inflate`,
  );
  t.match(path(0), /^software: zlib .* deflate \(level 0: /);
  t.throws(() => new native.ZlibStream(false, 4, 'isal'), { message: /ISA-L deflate levels are 1\.\.3/ });
  t.throws(() => new native.ZlibStream(false, 0, 'isal'), { message: /ISA-L deflate levels are 1\.\.3/ });
});
