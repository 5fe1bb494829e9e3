/**
 * The qpl and qatzip hardware policies on a machine without IAA or QAT: the
 * qpl page logic (busy retries, software path, raw page) through the fake IAA
 * engine, every page counted under the path that ran; --require-hardware and
 * --qatzip-sw-fallback off refused with what is missing; and the wire bytes
 * still decode with Node's raw inflate, whoever produced them.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { native } from '../../src/native/load.js';
import { makeImage, migrate, rejection, sha256, tmpdir } from '../helpers/index.js';
import { readChannelDump } from '../helpers/streams.js';
import { send } from '../../src/sender/sender.js';
import { silentLogger } from '../../src/log.js';
import { ExitCode } from '../../src/errors.js';
import { built, noIaa, noQat, qplSoftwarePath } from '../helpers/build.js';
import { accelReport } from '../../src/accel/report.js';
import { installTestNatives } from '../helpers/test-natives.js';

// The fake work queue and the fake IAA engine are in the test addon (addon/test/), which the program never loads.
installTestNatives();

const PS = 4096;

async function qplRun(t: Test, engine: string | null) {
  if (engine === null) native._qplSetFakeEngine(null);
  else t.match(native._qplSetFakeEngine(engine), { name: 'fake-iaa', hardware: false });
  t.teardown(() => native._qplSetFakeEngine(null));
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 4 << 20, 'mixed', 9);
  const out = path.join(dir, 'out');
  const dump = path.join(dir, 'dump');
  fs.mkdirSync(out);
  fs.mkdirSync(dump);
  const r = await migrate(
    {
      images: [{ name: 'pc.ram', path: img }],
      channels: 2,
      pageSize: PS,
      compression: 'qpl',
      methodParams: {},
      zeroPageDetection: 'multifd',
    },
    { outputDir: out, dumpStreams: dump },
  );
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(img), 'identical');
  // Every body decodes with an independent raw inflate limited to a 4 KiB window.
  for (let id = 0; id < 2; id++) {
    for (const p of readChannelDump(path.join(dump, `channel-${id}.bin`)).packets) {
      if (p.header.normalPages === 0) continue;
      let body = 4 * p.header.normalPages;
      for (let j = 0; j < p.header.normalPages; j++) {
        const len = p.payload.readUInt32BE(4 * j);
        const page = p.payload.subarray(body, body + len);
        if (len < PS) t.equal(zlib.inflateRawSync(page, { windowBits: 12 }).length, PS);
        body += len;
      }
    }
  }
  return r;
}

t.test('qpl through the fake IAA engine: its pages are named as the fake, never as hardware', async (t) => {
  const { sent, received } = await qplRun(t, 'busy=0,error_every=0');
  const c = sent.stats.paths.compression;
  t.ok((c.pages['fake-iaa'] ?? 0) > 0);
  t.notOk(c.pages.iaa, 'no page claims IAA');
  t.equal(c.fallbacks['not-hardware'], c.pages['fake-iaa'], 'fake pages are counted as not hardware');
  t.equal((c.pages['fake-iaa'] ?? 0) + (c.pages.raw ?? 0) + (c.pages[qplSoftwarePath] ?? 0), sent.stats.normalPages);
  t.match(sent.stats.compressionPath, /fake-iaa \(software stand-in for IAA, not hardware\)/);
  t.ok((received.stats.paths.compression.pages['fake-iaa'] ?? 0) > 0, 'the receiver decodes on the engine too');
});

t.test('qpl: a queue busy past 3 retries sends that page down the software path', async (t) => {
  // busy=4: four busy answers before each success, so the first page of each pair falls back.
  const { sent } = await qplRun(t, 'busy=4,error_every=0');
  const c = sent.stats.paths.compression;
  t.ok((c.fallbacks['queue-busy'] ?? 0) > 0, 'busy fallbacks counted');
  t.ok((c.pages[qplSoftwarePath] ?? 0) > 0, `those pages took the software path (${qplSoftwarePath} in this build)`);
});

t.test('qpl: a failed job sends that page down the software path', async (t) => {
  const { sent } = await qplRun(t, 'busy=0,error_every=5');
  const c = sent.stats.paths.compression;
  t.ok((c.fallbacks['device-error'] ?? 0) > 0);
  t.ok((c.pages[qplSoftwarePath] ?? 0) > 0);
});

t.test('qpl without any engine: all pages software or raw, each a no-device fallback', async (t) => {
  const { sent } = await qplRun(t, null);
  const c = sent.stats.paths.compression;
  t.equal((c.pages[qplSoftwarePath] ?? 0) + (c.pages.raw ?? 0), sent.stats.normalPages);
  t.equal(c.fallbacks['no-device'], sent.stats.normalPages);
  t.match(sent.stats.compressionPath, noIaa, 'the summary says why IAA did not run');
});

t.test('--require-hardware and --qatzip-sw-fallback off name what is missing', async (t) => {
  const base = {
    host: '127.0.0.1',
    port: 1,
    logger: silentLogger,
    images: [{ name: 'x', path: '/dev/null' }],
    channels: 1,
    pageSize: PS,
    methodParams: {},
    zeroPageDetection: 'multifd',
  };
  t.match(await rejection(send({ ...base, compression: 'qpl', requireHardware: true })), {
    exitCode: ExitCode.ACCEL,
    code: 'ERR_QPL_UNAVAILABLE',
    message: new RegExp(`qpl: Intel IAA through QPL is required \\(--require-hardware\\) but unavailable: ${noIaa.source}`),
  });
  t.match(await rejection(send({ ...base, compression: 'qatzip', requireHardware: true })), {
    exitCode: ExitCode.ACCEL,
    message: new RegExp(`Intel QAT through QATzip is required.*${noQat.source}`),
  });
  t.match(await rejection(send({ ...base, compression: 'qatzip', methodParams: { swFallback: false } })), {
    exitCode: ExitCode.ACCEL,
    message: new RegExp(`no QAT hardware session \\(${noQat.source}.*\\) and --qatzip-sw-fallback is off`),
  });
  native._qplSetFakeEngine('busy=0,error_every=0');
  t.teardown(() => native._qplSetFakeEngine(null));
  t.match(await rejection(send({ ...base, compression: 'qpl', requireHardware: true })), {
    exitCode: ExitCode.ACCEL,
    message: /fake-iaa, a software stand-in/,
  });
});

t.test('qatzip with the software fallback on (the default) counts its packets as software, no-device', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 2 << 20, 'text');
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const { sent, received } = await migrate(
    {
      images: [{ name: 'pc.ram', path: img }],
      channels: 2,
      pageSize: PS,
      compression: 'qatzip',
      methodParams: { swFallback: true, level: 3 },
      zeroPageDetection: 'multifd',
    },
    { outputDir: out },
  );
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(img));
  t.same(sent.stats.paths.compression.pages, { software: 512 });
  t.same(sent.stats.paths.compression.fallbacks, { 'no-device': 512 });
  t.same(received.stats.paths.compression.pages, { software: 512 });
});

t.test(
  'qatzip through the fake QAT session: its packets named fake-qat, never qat; --require-hardware refuses it',
  { skip: built.qatzip ? false : "the fake QAT session is QATzip's software session: this build has no QATzip" },
  async (t) => {
    t.ok(native._qatzipSetFakeHardware(true));
    t.teardown(() => native._qatzipSetFakeHardware(false));
    const dir = tmpdir(t);
    const img = makeImage(path.join(dir, 'pc.ram'), 2 << 20, 'mixed', 4);
    const out = path.join(dir, 'out');
    fs.mkdirSync(out);
    const { sent, received } = await migrate(
      {
        images: [{ name: 'pc.ram', path: img }],
        channels: 2,
        pageSize: PS,
        compression: 'qatzip',
        methodParams: {},
        zeroPageDetection: 'multifd',
      },
      { outputDir: out },
    );
    t.equal(sha256(path.join(out, 'pc.ram')), sha256(img));
    t.same(Object.keys(sent.stats.paths.compression.pages), ['fake-qat'], 'the hardware branch ran, on the stand-in');
    t.equal(sent.stats.paths.compression.fallbacks['not-hardware'], sent.stats.normalPages, 'every fake packet counted as not hardware');
    t.same(Object.keys(received.stats.paths.compression.pages), ['fake-qat'], 'the receiver decodes on the stand-in too');
    t.match(sent.stats.compressionPath, /^fake-qat \(QATzip [\d.]+ software session standing in for QAT, not hardware\) per packet/);
    const base = {
      host: '127.0.0.1',
      port: 1,
      logger: silentLogger,
      images: [{ name: 'x', path: '/dev/null' }],
      channels: 1,
      pageSize: PS,
      methodParams: {},
      zeroPageDetection: 'multifd',
    };
    t.match(await rejection(send({ ...base, compression: 'qatzip', requireHardware: true })), {
      exitCode: ExitCode.ACCEL,
      message: /fake-qat, a software stand-in/,
    });
    t.match(
      accelReport('/nonexistent-sysfs').backends.qatzip,
      { state: 'no-device', probes: [{ ok: true, reason: /^fake-qat/ }] },
      'mfd accel names the stand-in, and the state stays no device',
    );
  },
);

// Real hardware, where a probe finds it; otherwise skipped with the probe's own reason.
const iaa = native.qplHardwareOpen();
t.test('qpl on real IAA hardware, --require-hardware', { skip: iaa.ok ? false : `no IAA: ${iaa.reason}` }, async (t) => {
  native._qplSetFakeEngine(null);
  native.qplHardwareOpen();
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 4 << 20, 'mixed', 2);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const { sent } = await migrate(
    {
      images: [{ name: 'pc.ram', path: img }],
      channels: 2,
      pageSize: PS,
      compression: 'qpl',
      methodParams: {},
      zeroPageDetection: 'multifd',
      requireHardware: true,
    },
    { outputDir: out },
  );
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(img));
  t.ok((sent.stats.paths.compression.pages.iaa ?? 0) > 0);
});

const qat = native.qatzipHardwareOpen(1);
t.test('qatzip on a real QAT session, --require-hardware', { skip: qat.ok ? false : `no QAT: ${qat.reason}` }, async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'pc.ram'), 4 << 20, 'mixed', 2);
  const out = path.join(dir, 'out');
  fs.mkdirSync(out);
  const { sent } = await migrate(
    {
      images: [{ name: 'pc.ram', path: img }],
      channels: 2,
      pageSize: PS,
      compression: 'qatzip',
      methodParams: {},
      zeroPageDetection: 'multifd',
      requireHardware: true,
    },
    { outputDir: out },
  );
  t.equal(sha256(path.join(out, 'pc.ram')), sha256(img));
  t.same(Object.keys(sent.stats.paths.compression.pages), ['qat']);
});
