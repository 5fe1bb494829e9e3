/** Fuzz: a migration file's header and trailer, the delta manifest of version 2 above all (test/helpers/fuzz/file-header.ts); and the checks' messages. */
import t from 'tap';
import { assertTarget, formatOutcomes } from '../helpers/fuzz/harness.js';
import { assembleHeader, fileHeaderTarget, type HeaderInput } from '../helpers/fuzz/file-header.js';
import { decodeHeader } from '../../src/file/format.js';

t.test('fuzz: headers naming bases, and their trailers, end in a header a restore can rely on, or a typed error', async (t) => {
  const stats = await assertTarget(fileHeaderTarget(), 4000);
  t.ok(stats.executions > 0, `${stats.executions} executions: ${formatOutcomes(stats)}`);
  t.ok(stats.outcomes.has('ok'), 'some inputs pass every check');
  t.ok(stats.outcomes.has('ERR_FILE_HEADER'), 'some headers are refused for a field');
  t.ok(stats.outcomes.has('ERR_FILE_TRAILER'), 'some trailers are refused');
});

const input = (x: Partial<HeaderInput>): HeaderInput => ({
  bases: null,
  delta: undefined,
  version: null,
  layout: null,
  textOps: null,
  trailer: { normal: 64, zero: 0, referenced: 0, version: null, ops: null },
  ...x,
});
const base = { name: 'pc.ram', path: '/ckpt/pc.ram', size: 8192, sha256: 'ab'.repeat(32) };

t.test('the delta manifest: accepted as written, refused field by field, received vs expected', async (t) => {
  t.same(decodeHeader(assembleHeader(input({ bases: [base] })), 0).delta, { bases: [base] });
  t.equal(decodeHeader(assembleHeader(input({ bases: [base] })), 0).version, 2);
  const refused = (x: Partial<HeaderInput>, message: RegExp): void => {
    t.throws(() => decodeHeader(assembleHeader(input(x)), 0), { code: 'ERR_FILE_HEADER', message }, message.source);
  };
  refused({ version: 2 }, /parameters at byte 64: no delta \(the bases\), which a version 2 file has/);
  refused({ bases: [base], version: 1 }, /parameters at byte 64: delta in a version 1 file \(delta files are version 2\)/);
  refused(
    { bases: [base], layout: 2 },
    /header field at byte 12: a version 2 \(delta\) file in the mapped-ram layout; delta files are stream files/,
  );
  refused({ bases: [base, base] }, /delta\.bases\[1\]: base "pc\.ram" appears twice/);
  refused({ bases: [{ ...base, name: '../x' }] }, /delta\.bases\[0\]: base name "\.\.\/x" is not a file name/);
  refused(
    { bases: [{ ...base, sha256: 'AB'.repeat(32) }] },
    /delta\.bases\[0\]\.sha256 received "ABAB.*", expected 64 lowercase hex digits/,
  );
  refused({ bases: [{ ...base, size: -1 }] }, /delta\.bases\[0\]\.size received -1, expected a byte count/);
  refused({ bases: [{ ...base, size: 2 ** 53 - 1 }] }, /delta\.bases hold more than 4294967294 pages/);
});
