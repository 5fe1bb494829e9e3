/**
 * Delta fingerprints are XXH3-128 by one of the CPU's kernels (addon/delta.cc: AVX-512, AVX2 or
 * the default SSE2 on x86-64), chosen at load; MFD_DELTA_HASH names another. Every kernel this
 * CPU runs gives the same entries for the same pages, in a process of its own, so a sender and a
 * receiver on different CPUs match; a kernel the CPU lacks is refused by name, and `mfd accel`
 * says which one runs.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { native } from '../../src/native/load.js';
import { bin } from '../helpers/files.js';
import { requireDeltaOrSkip } from '../helpers/delta.js';

requireDeltaOrSkip();

const fingerprintUrl = new URL('../../dist/delta/fingerprint.js', import.meta.url).href;
const loadUrl = new URL('../../dist/native/load.js', import.meta.url).href;

/**
 * In a fresh process with MFD_DELTA_HASH=`kernel`: the kernel that runs, and a digest of the entries of
 * 300 pages (each filled from its own seed, every 7th zero; 8 KiB pages too, and a page size past
 * XXH3's 16 KiB stripes) fingerprinted by the addon on all cores.
 */
function run(kernel: string): { kernel: string; digest: string; entries: number } {
  const script = `
    const { native } = await import(${JSON.stringify(loadUrl)});
    const { fingerprintPages } = await import(${JSON.stringify(fingerprintUrl)});
    const { createHash } = await import('node:crypto');
    const h = createHash('sha256');
    let entries = 0;
    for (const ps of [4096, 8192, 65536]) {
      const count = 300;
      const pages = new Uint8Array(ps * count);
      let x = 12345;
      for (let i = 0; i < pages.length; i += 4) {
        if (Math.floor(i / ps) % 7 === 3) continue;
        x = (Math.imul(x, 1103515245) + 12345) >>> 0;
        pages[i] = x >>> 24; pages[i + 1] = x >>> 16; pages[i + 2] = x >>> 8; pages[i + 3] = x;
      }
      const out = new Uint8Array(16 * count);
      const n = await fingerprintPages(pages, ps, count, 0, out);
      entries += n;
      h.update(out.subarray(0, 16 * n));
    }
    console.log(JSON.stringify({ kernel: native.deltaHashKernel, digest: h.digest('hex'), entries }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, MFD_DELTA_HASH: kernel },
  });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as { kernel: string; digest: string; entries: number };
}

const kernels = native.deltaHashKernels ?? [];

t.test('the kernel that runs is the best one this CPU has; the list is what the CPU runs', async (t) => {
  t.ok(kernels.length >= 1, `kernels: ${kernels.join(', ')}`);
  t.equal(native.deltaHashKernel, kernels[kernels.length - 1], 'the best, by default');
  if (process.arch === 'x64') {
    t.equal(kernels[0], 'sse2', "x86-64's default kernel first");
    const f = native.cpuFeatures();
    t.equal(kernels.includes('avx2'), !!f.avx2, 'avx2 where the CPU has it');
    t.equal(kernels.includes('avx512'), !!f.avx512f, 'avx512 where the CPU has avx512f');
  }
});

t.test('every kernel gives the same entries for the same pages', async (t) => {
  const each = kernels.map((k) => ({ asked: k, ...run(k) }));
  for (const r of each) t.equal(r.kernel, r.asked, `MFD_DELTA_HASH=${r.asked} runs it`);
  t.equal(each[0]!.entries, 3 * (300 - 43), 'the non-zero pages of each page size have entries');
  t.same(new Set(each.map((r) => r.digest)).size, 1, `one digest for ${kernels.join(', ')}`);
  t.not(each[0]!.digest, createHash('sha256').digest('hex'), 'and it covers entries');
});

t.test('a kernel the CPU does not run is refused by name, and the best one runs', async (t) => {
  const r = run('avx1024');
  t.equal(r.kernel, `${kernels[kernels.length - 1]} (MFD_DELTA_HASH=avx1024: not a kernel this CPU runs)`);
});

t.test('mfd accel names the kernel and those available', async (t) => {
  const r = spawnSync(process.execPath, [bin, 'accel'], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, new RegExp(`^delta fingerprints: xxh3-128 ${native.deltaHashKernel} \\(available: ${kernels.join(', ')}\\)$`, 'm'));
  const j = spawnSync(process.execPath, [bin, 'accel', '--json'], { encoding: 'utf8' });
  t.same((JSON.parse(j.stdout) as { software: { deltaHash: unknown } }).software.deltaHash, {
    kernel: native.deltaHashKernel,
    kernels,
  });
});
