#!/usr/bin/env node
let main;
try {
  ({ main } = await import('../dist/cli/main.js'));
} catch (err) {
  // The addon did not load (another OS, no build for this host): say why and what to do, without a stack trace.
  if (err?.code !== 'ERR_NATIVE_LOAD') throw err;
  process.stderr.write(`mfd: ${err.message} [${err.code}]\n`);
  process.exit(err.exitCode);
}

process.exitCode = await main(process.argv.slice(2));
