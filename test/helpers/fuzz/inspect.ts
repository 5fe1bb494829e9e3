/**
 * Fuzz target for the `mfd inspect` stream reader: channel streams of every
 * method, mutated (header fields, offsets, names, payloads, whole-stream
 * bytes), read with and without --extract (into a real file), sometimes with
 * the wrong page size. The reader reports problems in its report; anything
 * it throws must be typed, and the sink must only ever get page-aligned
 * offsets below 2^53 and whole pages.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { extractSink, inspectBytes, type PageSink } from '../../../src/inspect/inspect.js';
import { listMethods } from '../../../src/methods/index.js';
import { type FuzzTarget, outcomeAsync, violation } from './harness.js';
import { FUZZ_UUID } from './wire.js';
import { buildChannelStream, makeImage, mutateStream, streamMutation, type ChannelStream, type StreamMutation } from './streams.js';

interface InspectInput {
  stream: number;
  mutations: readonly StreamMutation[];
  /** Read with the stream's page size (0) or another one. */
  pageSize: number;
  extract: boolean;
}

/** One stream per method (4 KiB pages), and a 16 KiB-page one for the stream methods. */
export async function inspectCorpus(): Promise<ChannelStream[]> {
  const out: ChannelStream[] = [];
  for (const method of listMethods()) {
    const image = makeImage(26 * 4096 + 100, 4096, ['text', 'zero', 'random', 'sparse', 'zero', 'text'], 11);
    out.push(await buildChannelStream({ method, pageSize: 4096, block: 'pc.ram', image, uuid: FUZZ_UUID, channel: 1, perPacket: 6 }));
  }
  for (const method of ['zlib', 'zstd']) {
    const image = makeImage(9 * 16384, 16384, ['text', 'zero', 'sparse'], 12);
    out.push(await buildChannelStream({ method, pageSize: 16384, block: 'pc.ram', image, uuid: FUZZ_UUID, channel: 2, perPacket: 4 }));
  }
  return out;
}

export async function inspectTarget(): Promise<FuzzTarget<InspectInput>> {
  const corpus = await inspectCorpus();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mfd-fuzz-inspect-'));
  let n = 0;
  return {
    name: 'inspect',
    corpusSize: corpus.length,
    async: true,
    arbitrary: fc.record({
      stream: fc.nat({ max: corpus.length - 1 }),
      mutations: fc.oneof(
        { weight: 1, arbitrary: fc.constant([]) },
        { weight: 12, arbitrary: fc.array(streamMutation, { minLength: 1, maxLength: 4 }) },
      ),
      pageSize: fc.oneof({ weight: 10, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(4096, 16384, 65536) }),
      extract: fc.boolean(),
    }),
    async run(x) {
      const s = corpus[x.stream]!;
      const bytes = mutateStream(s, x.mutations);
      const ps = x.pageSize || s.pageSize;
      const pages = new Map<number, Buffer | null>();
      const file = path.join(dir, `extract-${n++ % 4}`);
      const extract = x.extract ? extractSink(s.block, file, ps) : null;
      let open = extract !== null;
      const finish = (): void => {
        if (open) {
          open = false;
          extract!.close();
        }
      };
      let maxEnd = 0;
      const sink: PageSink = (name, offset, page, packetNum) => {
        if (!Number.isSafeInteger(offset) || offset < 0 || offset % ps !== 0)
          violation(`inspect: sink got offset ${offset} (page size ${ps})`);
        if (page !== null && page.length !== ps) violation(`inspect: sink got a page of ${page.length} bytes, expected ${ps}`);
        if (name === s.block) {
          pages.set(offset, page === null ? null : Buffer.from(page));
          maxEnd = Math.max(maxEnd, offset + ps);
        }
        extract?.sink(name, offset, page, packetNum);
      };
      let reported = false;
      try {
        const result = await outcomeAsync('inspect', async () => {
          const r = await inspectBytes(bytes, 'fuzz.bin', ps, sink);
          reported = r.errors.length > 0;
          if (r.totals.packets !== r.packets.length)
            violation(`inspect: totals count ${r.totals.packets} packets, the list ${r.packets.length}`);
          if (x.mutations.length === 0 && ps === s.pageSize) {
            // Unmutated: no error, and every page rebuilt as sent.
            if (r.errors.length > 0) violation(`inspect: errors on an unmutated stream: ${r.errors[0]!.message}`);
            if (r.packets.length !== s.packets.length) violation(`inspect: ${r.packets.length} packets, sent ${s.packets.length}`);
            for (let off = 0; off < s.blockSize; off += ps) {
              const want = Buffer.alloc(ps);
              s.image.copy(want, 0, off, Math.min(s.blockSize, off + ps));
              const got = pages.get(off);
              if (got === undefined || (got === null ? !want.every((b) => b === 0) : !got.equals(want)))
                violation(`inspect: page at ${off} not rebuilt as sent`);
            }
          }
          if (extract) {
            finish();
            const size = fs.statSync(file).size;
            if (size > maxEnd) violation(`inspect --extract: file of ${size} bytes, the pages end at ${maxEnd}`);
          }
        });
        // "ok": a clean report; "reported": the problems are in the report, as they should be.
        return result === 'ok' && reported ? 'reported' : result;
      } finally {
        try {
          finish();
        } finally {
          fs.rmSync(file, { force: true });
        }
      }
    },
    close() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
