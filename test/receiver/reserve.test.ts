/** The journal's reserve (src/receiver/reserve.ts): the last checkpoint is written into it, cut to fit. */
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { BlockJournal, loadJournal } from '../../src/receiver/journal.js';
import { Output } from '../../src/receiver/output.js';
import { RESERVE_BYTES, Reserve, reservePathFor } from '../../src/receiver/reserve.js';
import { runPages } from '../../src/image/resume.js';
import { tmpdir } from '../helpers/index.js';

const PS = 4096;
const PAGES = 40_000;

async function scattered(t: Test) {
  const dir = tmpdir(t);
  const final = path.join(dir, 'img');
  const output = await Output.create('img', PAGES * PS, final, false);
  t.teardown(() => output.abort());
  const j = new BlockJournal(
    path.join(dir, '.img.mfd-journal'),
    output,
    '00112233-4455-6677-8899-aabbccddeeff',
    { name: 'img', size: PAGES * PS },
    PS,
  );
  // Every other page: 20000 runs, a journal of about 240 KB.
  const offsets = Array.from({ length: PAGES / 2 }, (_, i) => 2 * i * PS);
  j.note(offsets, offsets.length);
  return { dir, final, j };
}

t.test(
  'the last checkpoint goes into the reserve: the longest runs that fit, no bigger than the reserve, renamed to be the journal',
  async (t) => {
    const { final, j } = await scattered(t);
    j.reserve = Reserve.make(final);
    t.equal(fs.statSync(reservePathFor(final)).blocks * 512 >= RESERVE_BYTES, true, 'the reserve is allocated, not a hole');
    await j.checkpoint(true);
    t.notOk(fs.existsSync(reservePathFor(final)), 'the reserve became the journal');
    const size = fs.statSync(j.file).size;
    t.ok(size <= RESERVE_BYTES, `journal of ${size} bytes, at most ${RESERVE_BYTES}`);
    const back = (await loadJournal(j.file))!;
    const held = runPages(back.pages);
    t.ok(held > 1000 && held < PAGES / 2, `${held} of ${PAGES / 2} pages written are claimed`);
    t.equal(j.durablePages, held);
    for (let i = 0; i < back.pages.length; i += 2)
      if (back.pages[i]! % 2 !== 0 || back.pages[i + 1] !== 1) t.fail(`run ${back.pages[i]}+${back.pages[i + 1]} was not written`);
  },
);

t.test('without a reserve (or before a failure) the journal holds every run', async (t) => {
  const { j } = await scattered(t);
  await j.checkpoint();
  t.ok(fs.statSync(j.file).size > RESERVE_BYTES);
  t.equal(runPages((await loadJournal(j.file))!.pages), PAGES / 2);
});
