// An output's descriptor outlives every write started on it, also when the migration fails.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { Output } from '../../src/receiver/output.js';
import { MfdError } from '../../src/errors.js';
import { tmpdir } from '../helpers/index.js';

t.test('abort() waits for in-flight writes before closing the descriptor and removing the file', async (t) => {
  const dir = tmpdir(t);
  const final = path.join(dir, 'vm.ram');
  const out = await Output.create('vm.ram', 8192, final, false);
  let fdSeen = -1;
  let finishWrite!: () => void;
  const write = out.use(
    (fd) =>
      new Promise<void>((resolve) => {
        fdSeen = fd;
        finishWrite = () => {
          // What the addon's thread-pool write does late: it must still hit this file.
          fs.writeSync(fd, Buffer.from('late page'), 0, 9, 4096);
          resolve();
        };
      }),
  );
  const aborted = out.abort();
  await new Promise((r) => setTimeout(r, 50));
  t.ok(fs.fstatSync(fdSeen).isFile(), 'the descriptor is still open while a write is in flight');
  t.ok(fs.existsSync(Output.tempPathFor(final)), 'and the temporary file is still there');
  const refused = await out.use(async () => 'ran').catch((e: unknown) => e);
  t.ok(refused instanceof MfdError && refused.code === 'ERR_FILE_CLOSED', 'no new operation starts once aborting');
  finishWrite();
  await write;
  await aborted;
  t.throws(() => fs.fstatSync(fdSeen), { code: 'EBADF' }, 'closed once the write finished');
  t.notOk(fs.existsSync(Output.tempPathFor(final)), 'temporary file removed');
  t.notOk(fs.existsSync(final), 'no final file');
});

t.test('commit() waits for in-flight writes too, and the written bytes are in the final file', async (t) => {
  const dir = tmpdir(t);
  const final = path.join(dir, 'vm.ram');
  const out = await Output.create('vm.ram', 8192, final, false);
  const write = out.use(
    (fd) => new Promise<void>((resolve) => setTimeout(() => (fs.writeSync(fd, Buffer.from('page'), 0, 4, 0), resolve()), 30)),
  );
  await out.commit(false);
  await write;
  t.equal(fs.readFileSync(final).subarray(0, 4).toString(), 'page');
  t.equal(fs.statSync(final).size, 8192);
});
