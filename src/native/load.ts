/**
 * Loads the addon from build/Release (or build/Debug), collecting every error
 * so a failed load says what was tried and what to do about it. MFD_ADDON_PATH
 * names another build's mfd.node instead (CI tests a build against QPL and
 * QATzip beside the default one); nothing else is tried then.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { NativeLoadError } from '../errors.js';
import type { MfdBinding } from './binding.js';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function load(): MfdBinding {
  const tried: string[] = [];
  const files = process.env.MFD_ADDON_PATH ? [path.resolve(process.env.MFD_ADDON_PATH)] : ['Release', 'Debug'].map((f) => path.join(root, 'build', f, 'mfd.node'));
  for (const file of files) {
    try {
      return require(file) as MfdBinding;
    } catch (err) {
      tried.push(`${file}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new NativeLoadError(
    `Could not load the mfd addon.\n  tried:\n    ${tried.join('\n    ')}\n` +
      `  Possible solutions:\n    - run "npm install" (or "npm run build") in ${root} to compile it\n` +
      `    - install a C++ toolchain and Python 3 for node-gyp (Debian: apt-get install g++ make python3)`,
  );
}

export const native: MfdBinding = load();
