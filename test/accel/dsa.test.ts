/**
 * The DSA zero-page backend, exercised through the fake work queue (a software
 * stand-in that executes the submitted descriptors) and, as far as this machine
 * allows, the real submission path: /dev/null accepts write() submissions but
 * never completes them, which drives the timeout and device-failure handling.
 * Every zero flag and CRC is checked against the CPU scan.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../../src/native/load.js';
import { readWorkQueues } from '../../src/offload/sysfs.js';
import { makeImage, migrate, rejection, sha256, tmpdir } from '../helpers/index.js';
import { silentLogger } from '../../src/log.js';
import { send, type SendOptions } from '../../src/sender/sender.js';
import { ExitCode } from '../../src/errors.js';
import { installTestNatives } from '../helpers/test-natives.js';

// The fake work queue and the fake IAA engine are in the test addon (addon/test/), which the program never loads.
installTestNatives();

const PS = 4096;
const FIELDS = ['device', 'pageFault', 'descriptorError', 'queueBusy', 'deviceFailed', 'retries', 'batches', 'descriptors'] as const;
type Counts = Record<(typeof FIELDS)[number], number>;

/** Pages with known content: zero, non-zero early, non-zero only in the last word, non-zero only in the last byte. */
function pages(n: number): Buffer {
  const b = Buffer.alloc(n * PS);
  for (let i = 0; i < n; i++) {
    const p = b.subarray(i * PS, (i + 1) * PS);
    switch (i % 5) {
      case 1:
        p[10] = 1;
        break;
      case 2:
        p[PS - 8] = 7;
        break;
      case 3:
        p[PS - 1] = 9;
        break;
      case 4:
        p.fill(0x41, 100, 3000);
        break;
    }
  }
  return b;
}

function scan(
  id: number,
  buf: Uint8Array,
  n: number,
  timeoutMs = 2000,
): Promise<{ zeros: number; zero: Uint8Array; crc: Uint32Array; counts: Counts }> {
  const zero = new Uint8Array(n);
  const crc = new Uint32Array(n);
  const c = new Float64Array(8);
  return new Promise((resolve, reject) =>
    native.dsaScan(id, buf, PS, n, zero, crc, c, timeoutMs, (err, zeros) => {
      if (err) return reject(err);
      resolve({ zeros, zero, crc, counts: Object.fromEntries(FIELDS.map((f, i) => [f, c[i]!])) as Counts });
    }),
  );
}

function reference(buf: Uint8Array, n: number): { zeros: number; zero: Uint8Array; crc: Uint32Array } {
  const zero = new Uint8Array(n);
  const crc = new Uint32Array(n);
  const zeros = native.analysePagesSync(buf, PS, n, zero, crc);
  return { zeros, zero, crc };
}

async function checkScan(t: Test, spec: string, n: number): Promise<Counts> {
  const buf = pages(n);
  const { id } = native.dsaOpen(spec, '/sys');
  const r = await scan(id, buf, n);
  const ref = reference(buf, n);
  t.equal(r.zeros, ref.zeros, `${spec}: zero count as the CPU scan`);
  t.same([...r.zero], [...ref.zero], `${spec}: zero flags as the CPU scan`);
  t.same([...r.crc], [...ref.crc], `${spec}: CRCs as the CPU scan`);
  return r.counts;
}

t.test('the fake queue says what it is; bad specs and missing queues are refused with the reason', async (t) => {
  const info = native.dsaOpen('fake:max_batch=8', '/sys');
  t.match(info, { submission: 'fake', hardware: false, batches: true, maxBatch: 8 });
  t.throws(() => native.dsaOpen('fake:bogus=1', '/sys'), { code: 'ERR_DSA_OPEN', message: /unknown option "bogus"/ });
  t.throws(() => native.dsaOpen('dsa:/dev/dsa/wq9.9', '/sys'), { code: 'ERR_DSA_OPEN', message: /open \/dev\/dsa\/wq9\.9: No such file/ });
  t.throws(() => native.dsaOpen('dsa:/etc/hostname', '/sys'), { code: 'ERR_DSA_OPEN', message: /not a character device/ });
  t.throws(() => native.dsaOpen('/dev/dsa/wq0.0', '/sys'), { code: 'ERR_DSA_OPEN', message: /expected dsa:/ });
});

t.test('one batch per packet, split at max_batch; a single page goes as a plain descriptor', async (t) => {
  let c = await checkScan(t, 'fake:max_batch=128', 128);
  t.match(c, { device: 128, batches: 1, descriptors: 128, pageFault: 0, descriptorError: 0 });
  c = await checkScan(t, 'fake:max_batch=8', 17);
  t.match(c, { device: 17, batches: 2, descriptors: 17 }, '8 + 8 in batches, the 17th alone');
  c = await checkScan(t, 'fake:max_batch=8,size=0', 1);
  t.match(c, { device: 1, batches: 0, descriptors: 1 });
});

t.test('a page fault is finished on the CPU from where the device stopped', async (t) => {
  const c = await checkScan(t, 'fake:fault_every=1,fault_at=1024', 40);
  // Pages non-zero before byte 1024 (i % 5 == 1, 4) are decided by the device; the rest fault.
  t.equal(c.device, 16);
  t.equal(c.pageFault, 24);
});

t.test('failed descriptors are checked on the CPU; the device stays in use', async (t) => {
  const c = await checkScan(t, 'fake:error_every=3', 30);
  t.equal(c.descriptorError, 10);
  t.equal(c.device, 20);
  const again = await checkScan(t, 'fake:error_every=3', 30);
  t.ok(again.device > 0, 'still on the device');
});

t.test('a busy shared queue is retried; past the retries the pages go to the CPU', async (t) => {
  let c = await checkScan(t, 'fake:busy=5', 16);
  t.match(c, { device: 16, retries: 5 });
  c = await checkScan(t, 'fake:busy=5000,max_batch=8', 16);
  t.match(c, { device: 0, queueBusy: 16 });
});

t.test('a device that fails drops to the CPU for the rest of the run, with the reason', async (t) => {
  const spec = 'fake:fail_after=10,max_batch=32';
  const { id } = native.dsaOpen(spec, '/sys');
  let c = await checkScan(t, spec, 32);
  t.match(c, { device: 10, descriptorError: 22 });
  t.match(native.dsaStatus(id), { failed: true, reason: /hardware error/ });
  c = await checkScan(t, spec, 32);
  t.match(c, { device: 0, deviceFailed: 32, descriptors: 0 }, 'nothing more is submitted');
});

t.test('no completion in time fails the device; the CPU answers', async (t) => {
  const { id } = native.dsaOpen('fake:stall=1', '/sys');
  const buf = pages(8);
  const r = await scan(id, buf, 8, 50);
  t.same([...r.zero], [...reference(buf, 8).zero]);
  t.match(r.counts, { device: 0, deviceFailed: 8 });
  t.match(native.dsaStatus(id), { failed: true, reason: /no completion within 50 ms \(fake submission\)/ });
});

t.test('the kernel write() submission path: accepted by /dev/null, never completed, so the device fails and the CPU answers', async (t) => {
  const info = native.dsaOpen('dsa:/dev/null', '/sys');
  t.match(info, { submission: 'write', batches: false, maxBatch: 1 }, 'no portal mapping: write() with single descriptors');
  const buf = pages(4);
  const r = await scan(info.id, buf, 4, 50);
  t.same([...r.zero], [...reference(buf, 4).zero]);
  t.match(r.counts, { device: 0, deviceFailed: 4, descriptors: 4 });
  t.match(native.dsaProbe('dsa:/dev/null', '/sys', 50), { ok: false, reason: /accepted through write but no completion within 50 ms/ });
  t.match(native.dsaProbe('fake:', '/sys', 500), { ok: true, submission: 'fake', hardware: false });
});

t.test('dedicated-queue credits hold with concurrent packets', async (t) => {
  const { id } = native.dsaOpen('fake:size=2,max_batch=4', '/sys');
  const buf = pages(32);
  const rs = await Promise.all([0, 1, 2, 3].map(() => scan(id, buf, 32)));
  for (const r of rs) t.same([...r.zero], [...reference(buf, 32).zero]);
  t.equal(
    rs.reduce((a, r) => a + r.counts.device + r.counts.queueBusy, 0),
    128,
    'every page decided on the device or, if credits ran out, on the CPU',
  );
});

t.test('an image that shrinks under the device ends in a short read, not a crash', async (t) => {
  const dir = tmpdir(t);
  const f = path.join(dir, 'img');
  fs.writeFileSync(f, pages(16));
  const fd = fs.openSync(f, 'r+');
  t.teardown(() => fs.closeSync(fd));
  const map = new Uint8Array(native.mapRange(fd, 0, 16 * PS));
  fs.ftruncateSync(fd, 2 * PS);
  const { id } = native.dsaOpen('fake:max_batch=16', '/sys');
  const r = await scan(id, map, 16);
  t.equal(r.zeros, native.resultCodes.ESHORTREAD);
  native.unmapRange(map.buffer as ArrayBuffer);
});

t.test('end to end: dsa-accel with the fake queue, inline and in compute workers', async (t) => {
  process.env.MFD_ALLOW_FAKE_ACCEL = '1';
  t.teardown(() => {
    delete process.env.MFD_ALLOW_FAKE_ACCEL;
  });
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 6 << 20, 'mixed', 3);
  const totalPages = (6 << 20) / PS;
  for (const compression of ['none', 'zstd'] as const) {
    const out = path.join(dir, `out-${compression}`);
    fs.mkdirSync(out);
    const { sent } = await migrate(
      {
        images: [{ name: 'pc.ram', path: img }],
        channels: 3,
        pageSize: PS,
        compression,
        methodParams: {},
        zeroPageDetection: 'dsa-accel',
        accelPaths: ['fake-dsa:max_batch=32,fault_every=7,error_every=11', 'fake-dsa:max_batch=128'],
      },
      { outputDir: out },
    );
    t.equal(sha256(path.join(out, 'pc.ram')), sha256(img), `${compression}: identical`);
    const z = sent.stats.paths.zeroPage;
    t.equal(
      Object.values(z.pages).reduce((a, n) => a + n, 0),
      totalPages,
      'every page on one path',
    );
    t.ok((z.pages['fake-dsa'] ?? 0) > 0, 'pages decided by the fake queue, named as the fake');
    t.notOk(z.pages.dsa, 'nothing claims the hardware');
    t.ok((z.fallbacks['page-fault'] ?? 0) > 0 && (z.fallbacks['descriptor-error'] ?? 0) > 0, 'faults and errors counted by reason');
    t.match(sent.stats.zeroPagePath, /fake-dsa:max_batch=32.*fake-dsa via fake, batches of up to 32/);
    const ref = reference(fs.readFileSync(img), totalPages);
    t.equal(sent.stats.zeroPages, ref.zeros, 'as many zero pages as the CPU scan finds');
  }
});

t.test('options are checked before anything connects', async (t) => {
  // Port 1 has no listener: each of these must fail on its options first.
  const base = {
    host: '127.0.0.1',
    port: 1,
    logger: silentLogger,
    images: [{ name: 'x', path: '/dev/null' }],
    channels: 1,
    pageSize: PS,
    compression: 'none' as const,
    methodParams: {},
    zeroPageDetection: 'dsa-accel',
  };
  const migrate = (o: Partial<SendOptions>, _recv: unknown): Promise<unknown> => send({ ...base, ...o });
  t.match(await rejection(migrate({ ...base, accelPaths: [] }, { outputDir: '/nonexistent' })), {
    exitCode: ExitCode.USAGE,
    message: /needs at least one --accel-path/,
  });
  t.match(await rejection(migrate({ ...base, accelPaths: ['fake-dsa:'] }, { outputDir: '/nonexistent' })), {
    exitCode: ExitCode.USAGE,
    message: /MFD_ALLOW_FAKE_ACCEL=1/,
  });
  t.match(await rejection(migrate({ ...base, accelPaths: ['dsa:/dev/dsa/wq9.9'], requireHardware: true }, { outputDir: '/nonexistent' })), {
    exitCode: ExitCode.ACCEL,
    message: /dsa:\/dev\/dsa\/wq9\.9: open \/dev\/dsa\/wq9\.9: No such file.*--require-hardware/,
  });
  process.env.MFD_ALLOW_FAKE_ACCEL = '1';
  t.teardown(() => {
    delete process.env.MFD_ALLOW_FAKE_ACCEL;
  });
  t.match(await rejection(migrate({ ...base, accelPaths: ['fake-dsa:'], requireHardware: true }, { outputDir: '/nonexistent' })), {
    exitCode: ExitCode.ACCEL,
    message: /software stand-in, not hardware/,
  });
  t.match(
    await rejection(migrate({ ...base, zeroPageDetection: 'multifd', accelPaths: ['dsa:/dev/dsa/wq0.0'] }, { outputDir: '/nonexistent' })),
    {
      exitCode: ExitCode.USAGE,
      message: /--accel-path is for a hardware zero-page backend \(dsa-accel\)/,
    },
  );
  t.match(await rejection(migrate({ ...base, zeroPageDetection: 'multifd', requireHardware: true }, { outputDir: '/nonexistent' })), {
    exitCode: ExitCode.USAGE,
    message:
      /--require-hardware needs a backend that uses hardware: --compression qpl, --compression qatzip, --zero-page-detection dsa-accel/,
  });
});

t.test('a missing work queue falls back to the CPU for the whole run, counted with the reason', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 1 << 20, 'mixed', 5);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const { sent } = await migrate(
    {
      images: [{ name: 'pc.ram', path: img }],
      channels: 2,
      pageSize: PS,
      compression: 'none' as const,
      methodParams: {},
      zeroPageDetection: 'dsa-accel',
      accelPaths: ['dsa:/dev/dsa/wq9.9'],
    },
    { outputDir: out },
  );
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(img));
  t.match(sent.stats.zeroPagePath, /unavailable \(open \/dev\/dsa\/wq9\.9: No such file or directory\), cpu-/);
  t.equal(sent.stats.paths.zeroPage.fallbacks['no-device'], 256);
});

// A real DSA work queue, where sysfs lists one and a NOOP completes on it; otherwise skipped with the probe's reason.
const wq = readWorkQueues('/sys').dsa.find((w) => w.state === 'enabled' && w.type === 'user');
const probe = wq
  ? native.dsaProbe(`dsa:${wq.path}`, '/sys', 500)
  : { ok: false, reason: 'no enabled user DSA work queue under /sys/bus/dsa/devices' };
t.test('dsa-accel on a real work queue, --require-hardware', { skip: probe.ok ? false : `no DSA: ${probe.reason}` }, async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 4 << 20, 'mixed', 4);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const { sent } = await migrate(
    {
      images: [{ name: 'pc.ram', path: img }],
      channels: 2,
      pageSize: PS,
      compression: 'none' as const,
      methodParams: {},
      zeroPageDetection: 'dsa-accel',
      accelPaths: [`dsa:${wq!.path}`],
      requireHardware: true,
    },
    { outputDir: out },
  );
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(img));
  t.equal(sent.stats.paths.zeroPage.pages.dsa, (4 << 20) / PS);
});
