/**
 * Loads the addon through node-gyp-build: build/Release (or build/Debug), a
 * build from source, first; else the package's prebuilt binary,
 * prebuilds/linux-<arch>/mfd.glibc.node. A failed load says what was tried
 * and what to do about it; on an OS other than Linux it says that instead.
 * MFD_ADDON_PATH names another build's mfd.node instead (CI tests a build
 * against QPL and QATzip beside the default one); nothing else is tried then.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { NativeLoadError } from '../errors.js';
import { PACKAGE_ROOT as root } from '../version.js';
import type { MfdBinding } from './binding.js';

const require = createRequire(import.meta.url);

interface NodeGypBuild {
  (dir: string): unknown;
  /** The file load(dir) loads; throws when there is none for this platform. */
  resolve(dir: string): string;
}

function load(): { binding: MfdBinding; file: string } {
  if (process.platform !== 'linux') {
    throw new NativeLoadError(
      `mfd runs on Linux only (this is ${process.platform}): it moves memory images with Linux system calls and devices`,
    );
  }
  let file = '';
  try {
    // The implementation file: its resolve() names the file it would load (index.js may hand over to a
    // runtime's own addon resolver, which has none).
    const nodeGypBuild = require('node-gyp-build/node-gyp-build.js') as NodeGypBuild;
    // build/Release/mfd.node by name where it is: node-gyp-build takes the first .node file there, and
    // a clone's build also has the test addon (mfd_test.node, which the program never loads).
    const built = path.join(root, 'build', 'Release', 'mfd.node');
    file = process.env.MFD_ADDON_PATH
      ? path.resolve(process.env.MFD_ADDON_PATH)
      : fs.existsSync(built)
        ? built
        : nodeGypBuild.resolve(root);
    return { binding: require(file) as MfdBinding, file };
  } catch (err) {
    const why = (err as Error).message.trim().split('\n').join('\n    ');
    throw new NativeLoadError(
      `Could not load the mfd addon${file ? ` ${file}` : ''}:\n    ${why}\n` +
        `  Possible solutions:\n` +
        `    - build it from source: "npm rebuild mfd --build-from-source" where mfd is installed, "npm run build" in a clone (${root})\n` +
        `    - install a C++ toolchain and Python 3 for node-gyp (Debian: apt-get install g++ make python3)`,
    );
  }
}

const loaded = load();
export const native: MfdBinding = loaded.binding;
/** The addon file in use: a build from source (build/Release) or a prebuilt one (prebuilds/). */
export const nativeFile: string = loaded.file;
/** Why delta transfer is unavailable in a build whose addon says deltaAvailable false. */
export const DELTA_UNAVAILABLE =
  'the addon was built without xxhash.h (Debian: apt-get install libxxhash-dev, then rebuild: npm run build)';
