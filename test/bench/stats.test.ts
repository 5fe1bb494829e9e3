/** Medians, spreads, ratios pair by pair, cell summaries and targets, on made-up runs. */
import t from 'tap';
import { median, pairRatios, summarize } from '../../src/bench/stats.js';
import { accessOver, computeTargets, sizeGrowth, summarizeCell, type CellRecord } from '../../src/bench/summary.js';
import type { MfdSample } from '../../src/bench/runner.js';
import type { Cell } from '../../src/bench/matrix.js';
import { compareFiles } from '../../src/bench/files.js';
import { VerifyError } from '../../src/errors.js';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir } from '../helpers/index.js';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { childrenCpuSec, zstdFloor } from '../../src/bench/peers/zstd-floor.js';
import { loopback } from '../../src/bench/net.js';
import { which } from '../../src/proc/proc.js';

t.test('median and spread', async (t) => {
  t.equal(median([3, 1, 2]), 2);
  t.equal(median([4, 1, 3, 2]), 2.5);
  t.equal(median([7]), 7);
  t.throws(() => median([]));
  t.same(summarize([2, 1, 4]), { n: 3, median: 2, min: 1, max: 4, relSpread: 1.5 });
  t.same(summarize([null, 5, undefined, NaN]), { n: 1, median: 5, min: 5, max: 5, relSpread: 0 }, 'missing values are left out');
  t.equal(summarize([null, undefined]), null);
});

t.test('ratios are taken pair by pair, not as a ratio of medians', async (t) => {
  const mfd = [1, 4, 2];
  const peer = [2, 8, 1];
  t.equal(median(mfd) / median(peer), 1);
  t.equal(pairRatios(mfd, peer)?.median, 0.5, 'runs 0 and 1 are 0.5, run 2 is 2');
  t.same(pairRatios([1, 2, 3], [2, null, 6]), { n: 2, median: 0.5, min: 0.5, max: 0.5, relSpread: 0 }, 'a failed peer run drops its pair');
  t.equal(pairRatios([1], []), null);
  t.equal(pairRatios([1], [0]), null, 'no division by zero');
});

const cell = (over: Partial<Cell> = {}): Cell => ({
  compression: 'none',
  zeroPageDetection: 'multifd',
  channels: 4,
  profile: 'mixed',
  sizeBytes: 2 ** 30,
  ...over,
});
const sample = (wallSec: number, over: Partial<MfdSample> = {}): MfdSample => ({
  wallSec,
  senderSec: wallSec - 0.1,
  receiverSec: wallSec - 0.1,
  imageBytes: 2 ** 30,
  wireBytes: 2 ** 29,
  wireRatio: 0.5,
  sendCpuSec: 1,
  recvCpuSec: 2,
  sendRssBytes: 100 * 2 ** 20,
  recvRssBytes: 90 * 2 ** 20,
  linkBytes: 2 ** 29 + 1000,
  compressionPath: 'no compression',
  zeroPagePath: 'cpu-avx2',
  ...over,
});

t.test('a cell summary: medians, GB/s, peers, ratios, floor', async (t) => {
  const rec: CellRecord = {
    cell: cell(),
    runs: [sample(1), sample(2), sample(1.5)],
    peers: {
      qemu: { label: 'QEMU', samples: [{ wallSec: 4, linkBytes: 2 ** 29 }, { wallSec: 2 }, { wallSec: 3 }] },
      iperf3: { label: 'iperf3', samples: [{ bytesPerSec: 2 ** 29 }, { bytesPerSec: 2 ** 29 }, null], failed: 'boom' },
      nc: { label: 'nc', samples: [], skipped: 'not here' },
    },
  };
  const s = summarizeCell(rec);
  t.equal(s.key, 'none/multifd/4ch/mixed/1GiB');
  t.same(s.wallSec, { n: 3, median: 1.5, min: 1, max: 2, relSpread: 1 / 1.5 });
  t.equal(s.imageGBps.median, 2 ** 30 / 1.5 / 1e9);
  t.equal(s.sendRssMiB.median, 100);
  t.equal(s.recvCpuSec.median, 2);
  t.equal(s.peers.qemu?.wallSec?.median, 3);
  t.equal(s.ratios.qemu?.median, 0.5, 'pairs 0.25, 1, 0.5');
  t.equal(s.floorSec?.median, 1, 'wire bytes / iperf3 rate');
  t.equal(s.ratios.floor?.median, 1.5, 'pairs 1 and 2; run 2 had no iperf3');
  t.equal(s.peers.iperf3?.gbps?.median, 2 ** 29 / 1e9);
  t.equal(s.peers.iperf3?.failed, 'boom');
  t.equal(s.peers.nc?.skipped, 'not here');
  t.equal(s.ratios.nc, null);
  t.equal(s.linkBytesVsQemu?.n, 1);
});

t.test('targets: each with its value and pass, miss or not measured', async (t) => {
  const none = summarizeCell({
    cell: cell(),
    runs: [sample(1)],
    peers: {
      qemu: { label: 'QEMU', samples: [{ wallSec: 2.5 }] },
      qemu10: { label: 'QEMU 10', samples: [{ wallSec: 1.6 }] },
      nc: { label: 'nc', samples: [{ wallSec: 0.8 }] },
      iperf3: { label: 'iperf3', samples: [{ bytesPerSec: 2 ** 29 }] },
    },
  });
  const zstd = summarizeCell({
    cell: cell({ compression: 'zstd' }),
    runs: [sample(3)],
    peers: {
      qemu: { label: 'QEMU', samples: [{ wallSec: 4 }] },
      'zstd-floor': { label: 'floor', samples: [{ wallSec: 2.5, sendCpuSec: 4, recvCpuSec: 1 }] },
      'zstd-nc': { label: 'zstd-nc', samples: [null], failed: 'nc died' },
    },
  });
  const lz4 = summarizeCell({ cell: cell({ compression: 'lz4' }), runs: [sample(1)], peers: {} });
  const lz4Alone = summarizeCell({ cell: cell({ compression: 'lz4', channels: 8 }), runs: [sample(1)], peers: {} });
  const ts = computeTargets([none, zstd, lz4, lz4Alone]);
  const by = (id: string, channels = 4) => ts.find((x) => x.id === id && x.cell.channels === channels)!;
  t.same(
    ts.map((x) => `${x.cell.compression} ${x.cell.channels} ${x.id}`).sort(),
    [
      'lz4 4 lz4-vs-zstd',
      'lz4 8 lz4-vs-zstd',
      'none 4 floor-none',
      'none 4 none-vs-nc',
      'none 4 qemu-none',
      'none 4 qemu10-none',
      'zstd 4 qemu-zstd',
      'zstd 4 qemu10-zstd',
      'zstd 4 zstd-floor',
      'zstd 4 zstd-vs-zstd-nc',
    ],
    "each method's targets, on each of its cells",
  );
  t.match(by('qemu-none'), { value: 0.4, limit: 0.5, pass: true });
  t.match(by('qemu10-none'), { value: 1 / 1.6, limit: 0.5, pass: false });
  t.match(by('none-vs-nc'), { value: 1.25, op: '<', limit: 1, pass: false });
  t.match(by('floor-none'), { value: 1, limit: 1.3, pass: true });
  t.match(by('qemu-zstd'), { value: 0.75, limit: 0.6, pass: false });
  t.match(by('qemu10-zstd'), { value: null, pass: null, why: 'qemu10 not run' });
  t.match(by('zstd-floor'), { value: 3 / 2.5, limit: 1.5, pass: true });
  t.match(by('zstd-vs-zstd-nc'), { value: null, pass: null, why: 'nc died' });
  t.match(by('lz4-vs-zstd'), { value: 1 / 3, op: '<', limit: 1, pass: true }, 'lz4 against the zstd cell of the same channels and image');
  t.match(by('lz4-vs-zstd', 8), { value: null, pass: null, why: /no zstd cell with the same channels/ });
  t.equal(zstd.peers['zstd-floor']?.sendCpuSec?.median, 4, "a peer's CPU seconds are summarized");
});

t.test('growth with image size: memory flat or not', async (t) => {
  const mk = (size: number, rss: number, wall: number) =>
    summarizeCell({
      cell: cell({ sizeBytes: size }),
      runs: [sample(wall, { sendRssBytes: rss * 2 ** 20, recvRssBytes: 90 * 2 ** 20 })],
      peers: {},
    });
  const flat = sizeGrowth([mk(2 ** 29, 100, 0.5), mk(2 ** 31, 110, 2)]);
  t.equal(flat.length, 1);
  t.equal(flat[0]!.flat, true);
  t.equal(flat[0]!.timePerGiB, 1, 'four times the size in four times the time');
  t.equal(flat[0]!.sendRss, 1.1);
  const grows = sizeGrowth([mk(2 ** 29, 100, 0.5), mk(2 ** 31, 400, 2)]);
  t.equal(grows[0]!.flat, false);
  t.same(sizeGrowth([mk(2 ** 29, 100, 0.5)]), [], 'one size: nothing to compare');
});

t.test('outputs are compared with the image byte for byte', async (t) => {
  const dir = tmpdir(t);
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  const big = Buffer.alloc(9 << 20, 7); // more than one 8 MiB chunk
  fs.writeFileSync(a, big);
  fs.writeFileSync(b, big);
  await compareFiles(a, b, 'same');
  big[(8 << 20) + 5] = 8;
  fs.writeFileSync(b, big);
  const e = await compareFiles(a, b, 'peer x').catch((x: unknown) => x);
  t.ok(e instanceof VerifyError, 'a mismatch is a VerifyError (exit 5)');
  t.match((e as Error).message, `peer x: output ${b} differs from the image at byte ${(8 << 20) + 5}`);
  fs.writeFileSync(b, big.subarray(1));
  t.match(((await compareFiles(a, b, 'short').catch((x: unknown) => x)) as Error).message, /is 9437183 bytes, the image 9437184/);
  t.match(
    ((await compareFiles(a, path.join(dir, 'nope'), 'gone').catch((x: unknown) => x)) as Error).message,
    /gone: output .* is missing \(ENOENT\)/,
  );
});

t.test("the codec floor reads the children's CPU seconds from bash's times", async (t) => {
  t.equal(childrenCpuSec('0m0.002s 0m0.001s\n0m3.012s 0m0.410s\n'), 3.422);
  t.equal(childrenCpuSec('0m0.002s 0m0.001s\n1m2.500s 0m0.500s'), 63);
  t.throws(() => childrenCpuSec('no times here'), /bash times: unexpected output/);
});

t.test(
  'the codec floor on a real image: compress plus decompress CPU over the cores, zstd cells only',
  { skip: which('zstd') ? false : 'zstd is not installed' },
  async (t) => {
    const dir = tmpdir(t);
    const image = path.join(dir, 'img');
    fs.writeFileSync(image, Buffer.concat([randomBytes(4 << 20), Buffer.alloc(4 << 20)]));
    t.equal(zstdFloor.notApplicable(cell({ compression: 'none' })), 'the codec floor is measured for zstd cells');
    t.equal(zstdFloor.notApplicable(cell({ compression: 'zstd' })), null);
    const s = await zstdFloor.run({
      cell: cell({ compression: 'zstd' }),
      image,
      imageBytes: 8 << 20,
      workDir: dir,
      net: loopback(),
      signal: new AbortController().signal,
    });
    t.ok(s.sendCpuSec! > 0 && s.recvCpuSec! >= 0, `compress ${s.sendCpuSec} s, decompress ${s.recvCpuSec} s`);
    t.equal(s.wallSec, (s.sendCpuSec! + s.recvCpuSec!) / os.availableParallelism());
    t.same(fs.readdirSync(dir), ['img'], 'the compressed stream is removed');
  },
);

t.test("the runs' image access: one word when they agree, the count of each when they do not", async (t) => {
  t.equal(accessOver(['map (auto: touching ...)', 'map (auto: ...)']), 'map');
  t.equal(accessOver(['map (auto: a)', 'read (auto: b)', 'map (auto: c)']), 'map in 2 of 3 runs, read in 1');
  t.equal(accessOver([undefined, undefined]), '', 'a compressing method: none to report');
  const s = summarizeCell({ cell: cell(), runs: [sample(1, { imageAccess: 'read (--image-access read)' })], peers: {} });
  t.equal(s.imageAccess, 'read');
});
