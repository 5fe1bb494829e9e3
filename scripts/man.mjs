#!/usr/bin/env node
/**
 * Writes dist/man/mfd.1 (package.json "man") from the command tree the CLI
 * builds: the same source as --help and `mfd completion`. Needs dist/ (tsc) first.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildProgram, EXIT_CODES_HELP } from '../dist/cli/main.js';
import { manPage } from '../dist/cli/completion.js';
import { MFD_VERSION } from '../dist/version.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// The commands use their context only when they run; building the tree needs none.
const program = buildProgram(/** @type {any} */ ({}));
const out = path.join(root, 'dist', 'man', 'mfd.1');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, manPage(program, MFD_VERSION, EXIT_CODES_HELP));
