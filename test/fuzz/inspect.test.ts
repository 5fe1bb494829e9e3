/** Fuzz: the `mfd inspect` stream reader on mutated channel streams of every method (test/helpers/fuzz/inspect.ts). */
import t from 'tap';
import { assertTarget, formatOutcomes } from '../helpers/fuzz/harness.js';
import { inspectTarget } from '../helpers/fuzz/inspect.js';

t.test('fuzz: inspect reports any stream, hands the sink only valid pages, and throws only typed errors', async (t) => {
  const stats = await assertTarget(await inspectTarget(), 1000);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
});

// Regressions: the minimal inputs the fuzzer found.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { IoError } from '../../src/errors.js';
import { extractSink, inspectBytes } from '../../src/inspect/inspect.js';
import { inspectCorpus } from '../helpers/fuzz/inspect.js';
import { mutateStream } from '../helpers/fuzz/streams.js';
import { tmpdir } from '../helpers/index.js';
import { packetHeaderSize } from '../../src/wire/constants.js';

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'mfd.js');

t.test('regression: a page offset of 2^63 is reported, not extracted (was RangeError ERR_OUT_OF_RANGE, exit 1)', async (t) => {
  const dir = tmpdir(t);
  const none = (await inspectCorpus())[0]!; // method none, 4 KiB pages, 6 pages per packet
  const bytes = mutateStream(none, [{ k: 'offset', packet: 1, index: 2, value: 1n << 63n }]);
  const offsets: number[] = [];
  const r = await inspectBytes(bytes, 'x.bin', 4096, (_n, offset) => void offsets.push(offset));
  t.match(r.errors, [
    {
      at: r.packets[0]!.at + packetHeaderSize(4096) + r.packets[0]!.payloadBytes,
      code: 'ERR_PACKET_OFFSET',
      message: /^channel 1, packet 1: offset >= 2\^53 of page 2 out of range for ram block "pc\.ram"/,
    },
  ]);
  t.ok(
    offsets.every((o) => Number.isSafeInteger(o)),
    'the sink never sees it',
  );
  t.equal(r.packets.length, 1, 'reading stops at its packet');
  t.equal(offsets.length, 6, "the first packet's pages are extracted");
  const f = path.join(dir, 'x.bin');
  fs.writeFileSync(f, bytes);
  const cli = spawnSync(process.execPath, [bin, 'inspect', f, '--extract', `pc.ram=${path.join(dir, 'out')}`], { encoding: 'utf8' });
  t.equal(cli.status, 3, 'exit 3: the stream has errors');
  t.match(cli.stderr, /1 error\(s\) in the streams \[ERR_STREAM_INVALID\]/);
});

t.test('regression: an extraction that cannot be written is an IoError, not a payload error', async (t) => {
  const none = (await inspectCorpus())[0]!;
  const x = extractSink('pc.ram', '/dev/full', 4096);
  let thrown: unknown = null;
  try {
    await inspectBytes(mutateStream(none, []), 'x.bin', 4096, x.sink);
  } catch (e) {
    thrown = e;
  }
  t.ok(thrown instanceof IoError, 'typed');
  t.match(thrown, { code: 'ERR_ENOSPC', message: /^--extract pc\.ram: writing the page at offset 0 to "\/dev\/full": ENOSPC/ });
  t.throws(() => x.close(), IoError, 'sizing /dev/full fails typed too, and the descriptor is closed');
});
