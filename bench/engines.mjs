#!/usr/bin/env node
// npm run bench:engines [-- --image GUEST.img --size 64M --rounds 3 --addon build-libs/Release/mfd.node]
//
// The software engines of the qpl, qatzip and lz4 methods, side by side in one run, on one core:
//
//   qpl     mfd           mfd's raw deflate per page (zlib level 1, 4 KiB window)
//   qpl     qpl-software  libqpl's software path (qpl_path_software, fixed Huffman codes): QEMU's without IAA
//   qatzip  mfd           mfd's QZ-headed gzip members per 64 KiB (ISA-L igzip where the addon has it, else zlib)
//   qatzip  qatzip-sw     QATzip's software session (sw_backup = 1): QEMU's without QAT
//   lz4     liblz4        liblz4 in the addon (--lz4-engine liblz4, the default)
//   lz4     lz4-napi      lz4-napi's lz4_flex (--lz4-engine lz4-napi)
//   zstd    libzstd       libzstd in the addon (--zstd-engine libzstd, the default)
//   zstd    zstd-napi     zstd-napi's own zstd build (--zstd-engine zstd-napi)
//
// Each engine compresses the image's non-zero pages in packets of 128 pages, exactly as a send
// would (the same addon calls; zstd's packets dealt round robin to 4 channel streams, each flushed
// per packet), then decodes its own output; rounds are interleaved (the order
// rotates each round) and medians are reported: compression and decompression throughput of page
// bytes per CPU-second of this process (the calls run on this thread; CPU time, not wall time, so a
// shared machine's load does not count), and wire bytes (payload only; headers are the same for
// all). The libraries' engines need an addon built against them (MFD_ADDON_PATH or --addon; README,
// "Set-up" and "The libraries' software paths as engines"); without them only mfd's rows run.
// Images: a generated one (text, records, random and sparse pages), and --image for real guest RAM
// (../shared/corpus/guest-ram). Markdown on stdout; JSON lines in bench/results/engines.jsonl.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';

const { values: opt } = parseArgs({
  options: {
    image: { type: 'string', multiple: true, default: [] },
    size: { type: 'string', default: '64M' },
    rounds: { type: 'string', default: '3' },
    addon: { type: 'string' },
  },
});
if (opt.addon) process.env.MFD_ADDON_PATH = path.resolve(opt.addon);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { native } = await import('../dist/native/load.js');
const { isalLevel } = await import('../dist/methods/zlib.js');

const PS = 4096;
const PACKET = 128;
const units = { K: 1 << 10, M: 1 << 20, G: 1 << 30 };
const size = Number.parseInt(opt.size, 10) * (units[opt.size.slice(-1).toUpperCase()] ?? 1);

/** A deterministic image: 30% zero, 30% text of words, 20% records (counters, small ints, pointers), 10% random, 10% sparse. */
function synthetic(bytes) {
  const b = Buffer.alloc(bytes);
  let x = 12345;
  const rnd = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0);
  const words = [
    'the',
    'page',
    'migration',
    'kernel',
    'GET /index.html',
    'HTTP/1.1 200',
    'error',
    'user',
    'session',
    'memory',
    'qemu',
    'multifd',
    '\n',
    '  ',
    'value=',
    '{"id":',
    '}',
  ];
  for (let p = 0; p * PS < bytes; p++) {
    const page = b.subarray(p * PS, (p + 1) * PS);
    const k = rnd() % 10;
    if (k < 3) continue;
    if (k < 6) {
      let at = 0;
      while (at < PS) at += page.write(words[rnd() % words.length] + (rnd() % 4 === 0 ? String(rnd() % 1000) : ' '), at);
    } else if (k < 8) {
      for (let i = 0; i < PS; i += 16) {
        page.writeUInt32LE(p * 256 + i, i);
        page.writeUInt32LE(rnd() % 64, i + 4);
        page.writeBigUInt64LE(0xffff888000000000n + BigInt((rnd() % 4096) * 64), i + 8);
      }
    } else if (k < 9) {
      for (let i = 0; i < PS; i += 4) page.writeUInt32LE(rnd(), i);
    } else {
      for (let i = 0; i < 24; i++) page[rnd() % PS] = rnd() & 0xff;
    }
  }
  return b;
}

/** The non-zero pages in packets of 128 pages (what a send compresses). */
function packets(img) {
  const out = [];
  let cur = [];
  for (let off = 0; off + PS <= img.length; off += PS) {
    const page = img.subarray(off, off + PS);
    if (page.every((v) => v === 0)) continue;
    cur.push(page);
    if (cur.length === PACKET) {
      out.push(Buffer.concat(cur));
      cur = [];
    }
  }
  if (cur.length) out.push(Buffer.concat(cur));
  return out;
}

const lz4Napi = createRequire(import.meta.url)('lz4-napi');
const zstdNapi = createRequire(import.meta.url)('zstd-napi/binding');
const ZSTD_CHANNELS = 4;

/** zstd as a send makes it: a stream per channel, packets dealt round robin, each flushed; a round's streams are new. */
function zstdEngine(engine, open) {
  let tx = [];
  let rx = [];
  let k = 0;
  let j = 0;
  return {
    method: 'zstd',
    engine,
    round: () => {
      tx = Array.from({ length: ZSTD_CHANNELS }, () => open(false));
      rx = Array.from({ length: ZSTD_CHANNELS }, () => open(true));
      k = j = 0;
    },
    compress: (p) => tx[k++ % ZSTD_CHANNELS].compress(p),
    decompress: (c, n) => rx[j++ % ZSTD_CHANNELS].decompress(c, n),
  };
}
const qplLib = native.qplSoftwareOpen().ok;
const qzLib = native.qatzipSoftwareOpen(1).ok;
const isal = isalLevel(1);
const counts = new Float64Array(7);

const engines = [
  {
    method: 'qpl',
    engine: 'mfd',
    compress: (p) => {
      const out = Buffer.allocUnsafe((p.length / PS) * (PS + 4));
      return out.subarray(0, native.qplCompressPages([p], PS, out, counts, 0));
    },
    decompress: (c, n) => native.qplDecompressPages(c, n, PS, Buffer.allocUnsafe(n * PS), counts, 0),
  },
  qplLib && {
    method: 'qpl',
    engine: 'qpl-software',
    compress: (p) => {
      const out = Buffer.allocUnsafe((p.length / PS) * (PS + 4));
      return out.subarray(0, native.qplCompressPages([p], PS, out, counts, 1));
    },
    decompress: (c, n) => native.qplDecompressPages(c, n, PS, Buffer.allocUnsafe(n * PS), counts, 1),
  },
  {
    method: 'qatzip',
    engine: 'mfd',
    compress: (p) => {
      const out = Buffer.allocUnsafe(p.length + 4096);
      return out.subarray(0, native.qzMembers(p, 1, isal ?? 0, out));
    },
    decompress: (c, n) => (native.qzInflate ? native.qzInflate(c, Buffer.allocUnsafe(n * PS)) : zlib.gunzipSync(c).length),
  },
  qzLib && {
    method: 'qatzip',
    engine: 'qatzip-software',
    compress: (p) => {
      const out = Buffer.allocUnsafe(p.length + 4096);
      return out.subarray(0, native.qatzipCompress(p, out, true));
    },
    decompress: (c, n) => native.qatzipDecompress(c, Buffer.allocUnsafe(n * PS), true),
  },
  native.lz4Version !== null && {
    method: 'lz4',
    engine: 'liblz4',
    compress: (p) => {
      const out = Buffer.allocUnsafe(p.length + Math.floor(p.length / 255) + 20);
      return out.subarray(0, native.lz4Compress([p], out));
    },
    decompress: (c, n) => native.lz4Decompress(c, Buffer.allocUnsafe(n * PS)),
  },
  {
    method: 'lz4',
    engine: 'lz4-napi',
    compress: (p) => lz4Napi.compressSync(p),
    decompress: (c) => lz4Napi.uncompressSync(c).length,
  },
  native.zstdVersion !== null &&
    zstdEngine('libzstd', (decompress) => {
      const z = new native.ZstdStream(decompress, 1, decompress ? 25 : 0);
      return {
        compress: (p) => {
          const out = Buffer.allocUnsafe(p.length + (p.length >> 8) + 64);
          return out.subarray(0, z.compress([p], out));
        },
        decompress: (c, n) => z.decompress([c], Buffer.allocUnsafe(n * PS)),
      };
    }),
  // The zstd method's zstd-napi engine, call for call (src/methods/zstd.ts).
  zstdEngine('zstd-napi', (decompress) => {
    const { CCtx, DCtx, CParameter, DParameter, EndDirective } = zstdNapi;
    if (decompress) {
      const d = new DCtx();
      d.setParameter(DParameter.windowLogMax, 25);
      return {
        decompress: (c, n) => {
          const out = Buffer.allocUnsafe(n * PS);
          let got = 0;
          for (let src = c; src.length > 0;) {
            const [, wrote, read] = d.decompressStream(out.subarray(got), src);
            got += wrote;
            src = src.subarray(read);
          }
          return got;
        },
      };
    }
    const c = new CCtx();
    c.setParameter(CParameter.compressionLevel, 1);
    return {
      compress: (p) => {
        const out = Buffer.allocUnsafe(p.length + (p.length >> 8) + 64);
        let produced = 0;
        for (let src = p; ;) {
          const [remaining, wrote, read] = c.compressStream2(out.subarray(produced), src, EndDirective.flush);
          produced += wrote;
          src = src.subarray(read);
          if (src.length === 0 && remaining === 0) break;
        }
        return out.subarray(0, produced);
      },
    };
  }),
].filter(Boolean);

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
// CPU time of this (single-threaded) process: the machine may be shared, and wall time would count others' load.
const now = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

const images = [
  { name: `synthetic ${opt.size}`, data: synthetic(size) },
  ...opt.image.map((f) => ({ name: path.basename(f), data: fs.readFileSync(f) })),
];
const rounds = Number(opt.rounds);
const results = [];
for (const img of images) {
  const ps = packets(img.data);
  const bytes = ps.reduce((a, p) => a + p.length, 0);
  const runs = new Map(engines.map((e) => [e, { c: [], d: [], wire: 0 }]));
  for (let r = 0; r < rounds + 1; r++) {
    const order = engines.map((_, i) => engines[(i + r) % engines.length]);
    for (const e of order) {
      e.round?.();
      let t0 = now();
      const outs = ps.map((p) => e.compress(p));
      const tc = now() - t0;
      t0 = now();
      for (let i = 0; i < ps.length; i++)
        if (e.decompress(outs[i], ps[i].length / PS) !== ps[i].length)
          throw new Error(`${e.method} ${e.engine}: packet ${i} did not decode to its pages`);
      const td = now() - t0;
      if (r === 0) continue; // warm-up round
      const run = runs.get(e);
      run.c.push(tc);
      run.d.push(td);
      run.wire = outs.reduce((a, o) => a + o.length, 0);
    }
  }
  for (const e of engines) {
    const run = runs.get(e);
    results.push({
      image: img.name,
      method: e.method,
      engine: e.engine,
      pages: bytes / PS,
      wireBytes: run.wire,
      ratio: run.wire / bytes,
      compressMBs: bytes / 1e6 / median(run.c),
      decompressMBs: bytes / 1e6 / median(run.d),
      rounds,
    });
  }
}

// Against the method's first engine: mfd's own (qpl, qatzip), liblz4 (lz4), libzstd (zstd).
const base = (r) => results.find((x) => x.image === r.image && x.method === r.method);
console.log(`| image | method | engine | non-zero pages | wire bytes | ratio | vs first | compress MB/s | decompress MB/s |`);
console.log(`|---|---|---|---|---|---|---|---|---|`);
for (const r of results) {
  console.log(
    `| ${r.image} | ${r.method} | ${r.engine} | ${r.pages} | ${r.wireBytes} | ${r.ratio.toFixed(3)} | ${(r.wireBytes / base(r).wireBytes).toFixed(3)} | ${r.compressMBs.toFixed(0)} | ${r.decompressMBs.toFixed(0)} |`,
  );
}
if (!qplLib || !qzLib)
  console.log(
    `\n(${[!qplLib && 'libqpl', !qzLib && 'QATzip'].filter(Boolean).join(' and ')} not in this addon: their rows need a build against them)`,
  );
fs.mkdirSync(path.join(root, 'bench', 'results'), { recursive: true });
const stamp = new Date().toISOString();
fs.appendFileSync(
  path.join(root, 'bench', 'results', 'engines.jsonl'),
  results.map((r) => JSON.stringify({ at: stamp, ...r })).join('\n') + '\n',
);
