#!/usr/bin/env node
/**
 * Bundles the compiled CLI and compute worker (dist/, from tsc) into
 * dist/bundle/: cli.js, worker.js and the chunks they share. bin/mfd.js loads
 * the CLI from there, so a run reads a few files instead of about 120 modules
 * (module resolution and loading was most of mfd's start-up), and each
 * compute worker starts the same way. The library entry (dist/index.js) stays
 * tsc's output. npm packages stay outside the bundle: they are loaded from
 * node_modules as before (the addons must be; pino loads its transports by path).
 * Needs dist/ (tsc) first.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const outdir = path.join(dist, 'bundle');
fs.rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { cli: path.join(dist, 'cli', 'main.js'), worker: path.join(dist, 'compute', 'worker.js') },
  outdir,
  bundle: true,
  // Code that only some commands need (the bench) stays in chunks of its own, loaded when used.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  // Class and function names stay as written: errors and logs show them.
  keepNames: true,
  sourcemap: 'linked',
  logLevel: 'warning',
});
