#!/usr/bin/env node
// Makes the npm package's prebuilt addon, prebuilds/linux-<arch>/mfd.glibc.node,
// with prebuildify (N-API, so one binary serves every Node.js 20.3+), in a
// scratch copy of the addon's sources so build/ stays as it is.
//
//   npm run build:prebuilds                  # this machine's arch
//   npm run build:prebuilds -- --arch arm64  # cross-compiled (g++-aarch64-linux-gnu, zlib1g-dev:arm64)
//   node scripts/prebuild.mjs --pack         # (prepack) this arch, and arm64 where its cross compiler is
//                                            # installed, each only when missing or older than addon/ or binding.gyp
//
// The binary is portable (MFD_PORTABLE=1, see binding.gyp): ISA-L is loaded at
// run time where a host has it, so ISA-L's headers (libisal-dev) must be here
// to compile that path in; QPL, QATzip, liblz4 and libzstd stay out (build from source for
// them; the lz4 and zstd methods run on lz4-napi and zstd-napi there).
// Afterwards it checks that the binary links nothing a Linux host may lack, and
// prints the newest glibc and libstdc++ symbol versions it needs.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const { values } = parseArgs({ options: { arch: { type: 'string', default: os.arch() }, pack: { type: 'boolean', default: false } } });
// The GNU triplet of each architecture a prebuilt binary is made for.
const TRIPLET = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' };
// What a prebuilt binary may link: libraries every glibc Linux host has.
const ALLOWED =
  /^(libz\.so\.1|libstdc\+\+\.so\.6|libgcc_s\.so\.1|libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|ld-linux-[\w-]+\.so\.\d)$/;

function fail(msg) {
  console.error(`prebuild: ${msg}`);
  process.exit(1);
}

const outFor = (arch) => path.join(root, 'prebuilds', `linux-${arch}`, 'mfd.glibc.node');
const hasTool = (name) => spawnSync(name, ['--version'], { stdio: 'ignore' }).status === 0;

function newestSource() {
  const files = [path.join(root, 'binding.gyp'), ...readdirSync(path.join(root, 'addon')).map((f) => path.join(root, 'addon', f))];
  return Math.max(...files.map((f) => statSync(f).mtimeMs));
}

function build(arch) {
  const out = outFor(arch);
  const cross = arch !== os.arch();
  const triplet = TRIPLET[arch];
  if (cross && !triplet) fail(`no cross toolchain known for --arch ${arch} (known: ${Object.keys(TRIPLET).join(', ')})`);
  const env = { ...process.env, MFD_PORTABLE: '1', JOBS: 'max' };
  if (cross) Object.assign(env, { CC: `${triplet}-gcc`, CXX: `${triplet}-g++`, LINK: `${triplet}-g++`, AR: `${triplet}-ar` });
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'mfd-prebuild-'));
  try {
    for (const f of ['package.json', 'binding.gyp', 'addon']) cpSync(path.join(root, f), path.join(scratch, f), { recursive: true });
    symlinkSync(path.join(root, 'node_modules'), path.join(scratch, 'node_modules'));
    const args = [
      require.resolve('prebuildify/bin.js'),
      '--napi',
      '--strip',
      '--tag-libc',
      `--target=${process.versions.node}`,
      `--arch=${arch}`,
      `--cwd=${scratch}`,
      `--out=${root}`,
    ];
    if (cross) args.push(`--strip-bin=${triplet}-strip`);
    execFileSync(process.execPath, args, { stdio: 'inherit', env });
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }

  const readelf = (flag) => execFileSync(cross ? `${triplet}-readelf` : 'readelf', [flag, '--wide', out], { encoding: 'utf8' });
  const needed = readelf('-d')
    .split('\n')
    .map((l) => /\(NEEDED\).*\[(.+)\]/.exec(l)?.[1])
    .filter(Boolean);
  const extra = needed.filter((lib) => !ALLOWED.test(lib));
  if (extra.length > 0) fail(`${path.relative(root, out)} links ${extra.join(', ')}, which a host may lack`);
  // The oldest host it runs on: the newest glibc and libstdc++ symbol versions it asks for.
  const newest = (re) => [...new Set(readelf('-V').match(re) ?? [])].sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).pop();
  console.log(
    `prebuild: ${path.relative(root, out)} (${statSync(out).size} bytes), links ${needed.join(', ')}; needs ${newest(/GLIBC_[\d.]+/g)}, ${newest(/GLIBCXX_[\d.]+/g)}`,
  );
  if (!cross) {
    const probe = `const b = require(${JSON.stringify(out)}); console.log('prebuild: loads; ISA-L ' + (b.isalVersion ?? 'not available: ' + b.isalUnavailable) + ', CRC-32C ' + b.crc32cEngine)`;
    execFileSync(process.execPath, ['-e', probe], { stdio: 'inherit' });
  }
}

if (process.platform !== 'linux') fail(`prebuilt binaries are made on Linux (this is ${process.platform})`);
let arches = [values.arch];
if (values.pack) {
  arches = [os.arch()];
  for (const [arch, triplet] of Object.entries(TRIPLET)) {
    if (arch === os.arch()) continue;
    if (hasTool(`${triplet}-g++`)) arches.push(arch);
    else if (existsSync(outFor(arch)) && statSync(outFor(arch)).mtimeMs < newestSource())
      fail(
        `${path.relative(root, outFor(arch))} is older than addon/ and there is no ${triplet}-g++ here to rebuild it: install it, or remove the file`,
      );
    else if (!existsSync(outFor(arch)))
      console.log(
        `prebuild: linux-${arch}: no ${triplet}-g++ here, so the package has no prebuilt addon for it (those hosts build from source)`,
      );
  }
}
const sources = newestSource();
for (const arch of arches) {
  const out = outFor(arch);
  if (values.pack && existsSync(out) && statSync(out).mtimeMs >= sources) {
    console.log(`prebuild: ${path.relative(root, out)} is up to date`);
    continue;
  }
  try {
    execFileSync('pkg-config', ['--exists', 'libisal >= 2.25']);
  } catch {
    fail("ISA-L's headers are needed to build the run-time ISA-L path into the binary (Debian: apt-get install libisal-dev pkg-config)");
  }
  build(arch);
}
