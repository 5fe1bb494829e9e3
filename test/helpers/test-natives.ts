/**
 * The test addon (mfd_test.node, addon/test/): the stand-ins for devices this machine may not have,
 * a fake DSA work queue ("fake-dsa:" accel paths) and a fake IAA engine (native._qplSetFakeEngine).
 * The program never loads it; a test that uses a stand-in calls installTestNatives() first, which
 * loads it from beside the product addon in use (build/Release/, or MFD_ADDON_PATH's build)
 * and hands its table to the product.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { native, nativeFile } from '../../src/native/load.js';

const require = createRequire(import.meta.url);
let installed = false;

/** The test addon's file: beside the product addon in use. */
export function testAddonFile(): string {
  return path.join(path.dirname(nativeFile), 'mfd_test.node');
}

export function installTestNatives(): void {
  if (installed) return;
  const file = testAddonFile();
  if (!fs.existsSync(file))
    throw new Error(`the test addon ${file} is not there: build it with the product addon (npx node-gyp rebuild in a clone)`);
  const addon = require(file) as { natives: unknown };
  native._installTestNatives(addon.natives);
  installed = true;
}
