/** Option parsing for `mfd bench`: lists, sizes, the shaped link, the matrix. */
import t from 'tap';
import {
  buildCells,
  cellKey,
  parseBenchOptions,
  parseDelay,
  parseLink,
  parseList,
  parsePeers,
  parseRate,
  parseSizeList,
  type RawBenchOptions,
} from '../../src/bench/matrix.js';
import { describeLink, tbfCommand } from '../../src/bench/netns.js';
import { UsageError } from '../../src/errors.js';

const raw = (over: Partial<RawBenchOptions> = {}): RawBenchOptions => ({
  compression: 'none,zstd',
  channels: '1,4',
  zeroPageDetection: 'multifd',
  profile: 'mixed',
  size: '1G',
  runs: '3',
  warmup: '1',
  seed: '1',
  ...over,
});
const METHODS = ['none', 'zlib', 'zstd', 'lz4'];
const DETECTORS = ['multifd', 'none'];
const parse = (over: Partial<RawBenchOptions> = {}) => parseBenchOptions(raw(over), METHODS, DETECTORS);

t.test('lists: trimmed, empty items dropped, duplicates and empties refused', async (t) => {
  t.same(parseList('--x', ' a, b,,c '), ['a', 'b', 'c']);
  t.throws(() => parseList('--x', ' , '), /Expected a comma-separated list for --x/);
  t.throws(() => parseList('--x', 'a,a'), /--x lists "a" twice/);
  t.same(parseList('--x', 'a,b,a', true), ['a', 'b', 'a'], 'repeats where the flag allows them');
});

t.test('size lists in binary units, whole pages only', async (t) => {
  t.same(parseSizeList('--size', '512M,1G,2G,4G'), [512 * 2 ** 20, 2 ** 30, 2 * 2 ** 30, 4 * 2 ** 30]);
  t.same(parseSizeList('--size', '0.5G'), [2 ** 29]);
  t.same(parseSizeList('--size', '8M'), [8 * 2 ** 20]);
  t.throws(() => parseSizeList('--size', '1000'), /whole 4 KiB pages/);
  t.throws(() => parseSizeList('--size', '1G,lots'), /Expected a size like/);
});

t.test('--link RATE[,DELAY]', async (t) => {
  t.same(parseLink('1gbit,1ms'), { rateBitsPerSec: 1e9, delayMs: 1, text: '1gbit,1ms' });
  t.same(parseLink('100mbit'), { rateBitsPerSec: 1e8, delayMs: 0, text: '100mbit' });
  t.same(parseLink('2.5gbit, 500us'), { rateBitsPerSec: 2.5e9, delayMs: 0.5, text: '2.5gbit, 500us' });
  t.equal(parseRate('800kbit'), 8e5);
  t.equal(parseRate('10GBIT'), 1e10);
  t.equal(parseDelay('0'), 0);
  t.equal(parseDelay('1s'), 1000);
  t.equal(parseDelay('0.2ms'), 0.2);
  t.throws(() => parseRate('1gbps'), /Expected a rate like 100mbit/, "tc's bytes-per-second units are refused");
  t.throws(() => parseRate('fast'), /Expected a rate/);
  t.throws(() => parseDelay('5'), /Expected a delay like 1ms/, 'a delay needs its unit');
  t.throws(() => parseDelay('1h'), /Expected a delay/);
  t.throws(() => parseLink('1gbit,1ms,3'), /Expected --link RATE\[,DELAY\]/);
  t.throws(() => parseLink(',1ms'), /Expected --link RATE/);
  const e = t.throws(() => parseLink('1gbit,20s'));
  t.ok(e instanceof UsageError, 'a bad --link is a usage error (exit 2)');
});

t.test("tc command: tbf for the rate, with or without a delay (the delay is the delay line's)", async (t) => {
  const plain = tbfCommand('ns', 'dev0', parseLink('1gbit'));
  t.same(plain.slice(0, 8), ['-n', 'ns', 'qdisc', 'add', 'dev', 'dev0', 'root', 'handle']);
  t.match(plain.join(' '), /tbf rate 1000000000bit burst 125000 latency 25ms/);
  t.match(tbfCommand('ns', 'dev0', parseLink('100mbit')).join(' '), /burst 65536 /, 'burst at least 64 KiB');
  t.same(tbfCommand('ns', 'dev0', parseLink('1gbit,1ms')), plain, 'no netem: the same tbf with a delay');
  t.match(describeLink(parseLink('1gbit')), /^veth between two network namespaces, 1 gbit\/s, no added delay \(tc tbf\)$/);
  t.match(
    describeLink(parseLink('400mbit,1ms')),
    /^TUN pair between two network namespaces, 400 mbit\/s, 1 ms delay each way \(round trip \+2 ms; tc tbf for the rate \+ mfd delay line for the delay, no netem\)$/,
  );
});

t.test('peers: names, all, none', async (t) => {
  t.same(parsePeers('nc,qemu'), ['nc', 'qemu']);
  t.same(parsePeers('all'), ['iperf3', 'nc', 'zstd-nc', 'zstd-floor', 'qemu', 'qemu10', 'rsync', 'mfd-plain']);
  t.same(parsePeers('none'), []);
  t.throws(
    () => parsePeers('scp'),
    /Expected --peers values from iperf3, nc, zstd-nc, zstd-floor, qemu, qemu10, rsync, mfd-plain but received "scp"/,
  );
});

t.test('the whole option set, and the matrix it makes', async (t) => {
  const c = parse({ size: '512M,1G', zeroPageDetection: 'multifd,none', peers: 'nc', link: '1gbit,1ms' });
  t.same(c.compression, ['none', 'zstd']);
  t.same(c.channels, [1, 4]);
  t.same(c.sizes, [2 ** 29, 2 ** 30]);
  t.same(c.peers, ['nc']);
  t.equal(c.link?.delayMs, 1);
  t.equal(parse().peers, undefined, 'no --peers: every available peer');
  const cells = buildCells(c);
  t.equal(cells.length, 2 * 2 * 2 * 1 * 2, 'methods x channels x zero-page modes x profiles x sizes');
  t.same(cells[0], { compression: 'none', zeroPageDetection: 'multifd', channels: 1, profile: 'mixed', sizeBytes: 2 ** 29 });
  t.equal(cells[1]!.channels, 4, 'channels vary fastest');
  t.equal(cells[cells.length - 1]!.sizeBytes, 2 ** 30, 'images outermost');
  t.equal(new Set(cells.map(cellKey)).size, cells.length, 'every cell has its own key');
  t.equal(cellKey(cells[0]!), 'none/multifd/1ch/mixed/512MiB');

  t.throws(() => parse({ compression: 'gzip' }), /Expected --compression values from none, zlib, zstd, lz4 but received "gzip"/);
  t.throws(() => parse({ channels: '0' }), /Expected integers in 1\.\.255 for --channels/);
  t.throws(() => parse({ channels: '1,x' }), /for --channels but received "x"/);
  t.throws(() => parse({ zeroPageDetection: 'dsa' }), /--zero-page-detection values from multifd, none/);
  t.throws(() => parse({ profile: 'video' }), /--profile values from mixed, zero, random, text/);
  t.throws(() => parse({ runs: '0' }), /1\.\.1000 for --runs/);
  t.throws(() => parse({ runs: '2,3' }), /take one number each/);
  t.equal(parse({ warmup: '0' }).warmup, 0);
});

t.test('--image files: a row each, named after the file; alone unless --profile is given', async (t) => {
  const images = [
    { path: '/data/a.img', sizeBytes: 2 ** 20 },
    { path: '/data/guest-b.ram', sizeBytes: 8192 },
  ];
  const alone = parse({ images, compression: 'zstd', channels: '4' });
  t.same(alone.profiles, [], 'no generated images without --profile');
  t.same(
    buildCells(alone).map((c) => [c.profile, c.sizeBytes, c.image]),
    [
      ['image:a', 2 ** 20, '/data/a.img'],
      ['image:guest-b', 8192, '/data/guest-b.ram'],
    ],
  );
  t.equal(cellKey(buildCells(alone)[0]!), 'zstd/multifd/4ch/image:a/1MiB');
  const both = parse({ images, profileGiven: true, compression: 'zstd', channels: '4' });
  t.same(
    buildCells(both).map((c) => c.profile),
    ['mixed', 'image:a', 'image:guest-b'],
    'generated images first, then the files',
  );
  t.throws(
    () => parse({ images: [{ path: '/x/odd.img', sizeBytes: 5000 }] }),
    /--image "\/x\/odd\.img" is 5000 bytes: expected a whole number of 4 KiB pages/,
  );
  t.throws(
    () =>
      parse({
        images: [
          { path: '/x/a.img', sizeBytes: 4096 },
          { path: '/y/a.img', sizeBytes: 4096 },
        ],
      }),
    /two files called a/,
  );
});
