/**
 * mfd recv --qemu and mfd send --qemu on the command line: options that do not apply are refused
 * (exit 2), a QEMU 7.2 or 10.0 source with postcopy or (10.0) switchover-ack is refused with the
 * reason (exit 3, the source fails instead of hanging), and a migration received through the CLI
 * prints its manifest as JSON.
 */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { tmpdir, makeImage, sha256, pagesDigest } from '../helpers/index.js';
import { QEMU_BUILDS, launch, noneMachine, setMigration, migrateTo, waitMigration } from '../helpers/qemu.js';
import { main } from '../../src/cli/main.js';
import { schemaErrors } from '../helpers/schema.js';

async function cli(args: string[], onListening?: (port: number) => void) {
  let stdout = '';
  let stderr = '';
  const code = await main(args, {
    stdout: (s) => (stdout += s + '\n'),
    stderr: (s) => {
      stderr += s + '\n';
      const m = /listening on .*:(\d+)$/.exec(s);
      if (m) onListening?.(Number(m[1]));
    },
  });
  return { code, stdout, stderr };
}

t.test('options that do not apply with --qemu are refused by name', async (t) => {
  const dir = tmpdir(t);
  const cases: [string[], RegExp][] = [
    [['recv', '--qemu', '--listen', '127.0.0.1:0', '--output', dir, '--in-place'], /--in-place cannot be used with --qemu/],
    [
      ['recv', '--qemu', '--from', 'file:/x', '--listen', '127.0.0.1:0', '--output', dir],
      /give one of --listen HOST:PORT .* or --from file:PATH/,
    ],
    [['recv', '--qemu', '--listen', '127.0.0.1:0', '--output', 'mem=/tmp/x'], /give --output DIR/],
    [
      ['recv', '--qemu', '--listen', '127.0.0.1:0', '--output', dir, '--psk-file', '/tmp/k'],
      /--psk-file cannot be used with --qemu: QEMU's migration channels do not speak mfd's authentication/,
    ],
    [['recv', '--qemu', '--listen', '0.0.0.0:0', '--output', dir], /refusing to listen on 0\.0\.0\.0 for a QEMU source without --insecure/],
    [['send', '--qemu', '--to', '127.0.0.1:1', dir], /--qemu needs --channels N/],
    [
      ['send', '--qemu', '--to', '127.0.0.1:1', '--channels', '2', '--mapped-ram', dir],
      /--mapped-ram is for a file: --qemu --to file:PATH --mapped-ram/,
    ],
    [
      ['send', '--qemu', '--to', 'file:/tmp/x', '--channels', '2', dir],
      /--qemu --to file: without --mapped-ram is one stream: QEMU takes multifd over file: only with mapped-ram/,
    ],
    [
      ['send', '--qemu', '--to', 'file:/tmp/x', '--mapped-ram', '--compression', 'zstd', dir],
      /--compression cannot be used with --qemu --to file:/,
    ],
    [['send', '--qemu', '--to', '127.0.0.1:1', '--channels', '2', dir, dir], /--qemu takes one directory/],
    [['send', '--to', '127.0.0.1:1', '--channels', '0', dir], /0, multifd off, is only for --qemu/],
    [['send', '--to', '127.0.0.1:1', '--multifd-flush-after-each-section', 'off', dir], /--multifd-flush-after-each-section is for --qemu/],
    [['send', '--to', '127.0.0.1:1', '--send-switchover-start', 'on', dir], /--send-switchover-start is for --qemu/],
    [['send', '--to', '127.0.0.1:1', '--zero-page-detection', 'legacy', dir], /--zero-page-detection legacy is for --qemu/],
    [
      ['send', '--qemu', '--to', '127.0.0.1:1', '--channels', '2', '--zero-page-detection', 'none', dir],
      /--zero-page-detection none cannot be used with --qemu: a replay sends zero pages in the multifd packets \(multifd\) or as ZERO records/,
    ],
  ];
  for (const [args, msg] of cases) {
    const r = await cli(args);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, msg);
  }
  const m = await cli(['send', '--qemu', '--to', '127.0.0.1:1', '--channels', '0', dir]);
  t.equal(m.code, 6, 'a directory without manifest.json: exit 6');
  t.match(m.stderr, /manifest\.json/);
});

for (const b of QEMU_BUILDS) {
  t.test(`through the CLI: a QEMU ${b.series} source`, { skip: b.missing }, async (t) => {
    const SIZE = 4 * 1024 * 1024;
    const dir = tmpdir(t);
    const image = makeImage(path.join(dir, 'image.ram'), SIZE, 'mixed', 5);

    /** A source with `capabilities` on is refused with `msg`, exit 3, and the source fails instead of waiting. */
    const refused = async (t: Test, name: string, capabilities: string[], msg: RegExp) => {
      const out = path.join(dir, name);
      fs.mkdirSync(out);
      const vm = await launch(dir, name, noneMachine(image, SIZE), b);
      t.teardown(() => vm.quit());
      await vm.qmp.cmd('migrate-set-capabilities', { capabilities: capabilities.map((capability) => ({ capability, state: true })) });
      const r = await cli(
        ['recv', '--qemu', '--listen', '127.0.0.1:0', '--output', out, '--timeout', '20'],
        (port) => void migrateTo(vm.qmp, port),
      );
      t.equal(r.code, 3, 'exit 3');
      t.match(r.stderr, msg);
      t.equal((await waitMigration(vm.qmp, 'failed')).status, 'failed', 'the source reports failed');
      t.same(
        fs.readdirSync(out).filter((f) => !f.startsWith('.')),
        [],
        'nothing left in the output directory',
      );
    };

    await t.test('with postcopy-ram is refused, and the source fails instead of waiting', (t) =>
      refused(
        t,
        'postcopy',
        ['postcopy-ram'],
        /migration command (OPEN_RETURN_PATH|POSTCOPY_ADVISE) \(.*\): mfd only receives precopy migrations without a return path/,
      ),
    );

    // switchover-ack (QEMU 8.1+) needs the return path: the destination must acknowledge the switchover.
    if (b.series !== '7.2') {
      await t.test('with switchover-ack is refused: it needs a return path', (t) =>
        refused(
          t,
          'switchover-ack',
          ['return-path', 'switchover-ack'],
          /migration command OPEN_RETURN_PATH \(the source opens a return path \(capability return-path, which postcopy-ram and switchover-ack need\)/,
        ),
      );
    }

    await t.test('with multifd zstd: --json prints the manifest', async (t) => {
      const out = path.join(dir, 'json');
      fs.mkdirSync(out);
      const vm = await launch(dir, 'json', noneMachine(image, SIZE), b);
      t.teardown(() => vm.quit());
      await setMigration(vm.qmp, { channels: 2, compression: 'zstd' });
      const r = await cli(['recv', '--qemu', '--listen', '127.0.0.1:0', '--output', out, '--json'], (port) => void migrateTo(vm.qmp, port));
      t.equal(r.code, 0, r.stderr);
      const j = JSON.parse(r.stdout) as { status: string; channels: number; method: string; ramblocks: { name: string; digest: string }[] };
      t.equal(j.status, 'completed');
      t.equal(schemaErrors('QemuRecvJson', j), '', 'valid against the JSON Schema');
      t.equal(j.channels, 2);
      t.equal(j.method, 'zstd');
      t.equal(j.ramblocks[0]!.digest, pagesDigest(image));
      t.equal(sha256(path.join(out, 'mem')), sha256(image));
      t.equal(fs.readdirSync(out).filter((f) => f.startsWith('.')).length, 0, 'no temporary files left');
    });
  });
}
