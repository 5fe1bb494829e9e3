#!/usr/bin/env node
import fs from 'node:fs';

// The bundled CLI (dist/bundle/, scripts/bundle.mjs: a few files to load instead of about 120 modules),
// unless tsc's output it was made from is newer (a build that ran tsc alone): then that output.
const mtime = (p) => fs.statSync(new URL(p, import.meta.url), { throwIfNoEntry: false })?.mtimeMs ?? -1;
const bundled = mtime('../dist/bundle/cli.js') >= mtime('../dist/cli/main.js');
let main;
try {
  ({ main } = await import(bundled ? '../dist/bundle/cli.js' : '../dist/cli/main.js'));
} catch (err) {
  // The addon did not load (another OS, no build for this host): say why and what to do, without a stack trace.
  if (err?.code !== 'ERR_NATIVE_LOAD') throw err;
  process.stderr.write(`mfd: ${err.message} [${err.code}]\n`);
  process.exit(err.exitCode);
}

process.exitCode = await main(process.argv.slice(2));
