/**
 * The test-only natives (the fake DSA work queue, the fake IAA engine) are an addon of their own,
 * mfd_test.node, built beside the product's and loaded only by tests: the program refuses the fakes
 * until a test hands them over, never maps the test addon, and the package does not ship its sources.
 */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { nativeFile } from '../../src/native/load.js';
import { testAddonFile } from '../helpers/test-natives.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

t.test('the product addon in use is mfd.node; the test addon is a separate file beside it', async (t) => {
  t.equal(path.basename(nativeFile), 'mfd.node');
  t.ok(fs.existsSync(testAddonFile()), `${testAddonFile()} built`);
});

t.test('the program, run as a user runs it, refuses the fakes and never maps the test addon', async (t) => {
  // A process of its own: this one has loaded the test addon if another test file's helper ran here.
  const script = `
    const { native } = await import(${JSON.stringify(path.join(root, 'dist', 'native', 'load.js'))});
    const { main } = await import(${JSON.stringify(path.join(root, 'dist', 'cli', 'main.js'))});
    const refusal = (fn) => { try { fn(); return null; } catch (e) { return { code: e.code, message: e.message }; } };
    const dsa = refusal(() => native.dsaOpen('fake:max_batch=8', '/sys'));
    const qpl = refusal(() => native._qplSetFakeEngine('busy=0,error_every=0'));
    const forged = refusal(() => native._installTestNatives({ magic: 0 }));
    const code = await main(['accel', '--json'], { stdout: () => {}, stderr: () => {} });
    const maps = require('node:fs').readFileSync('/proc/self/maps', 'utf8');
    console.log(JSON.stringify({ dsa, qpl, forged, code, product: maps.includes('/mfd.node'), test: maps.includes('mfd_test.node') }));
  `;
  const r = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);\n${script}`,
    ],
    {
      encoding: 'utf8',
      env: { ...process.env, MFD_ALLOW_FAKE_ACCEL: '1' },
    },
  );
  t.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  t.match(out.dsa, { code: 'ERR_DSA_OPEN', message: /test code, in mfd_test\.node, which this process has not loaded/ });
  t.match(out.qpl, { code: 'ERR_QPL_UNAVAILABLE', message: /fake-iaa is test code, in mfd_test\.node/ });
  t.match(out.forged, { message: /Expected the test addon's natives table/ });
  t.equal(out.code, 0, 'mfd accel ran');
  t.equal(out.product, true, 'the product addon is mapped');
  t.equal(out.test, false, 'the test addon is not');
});

t.test("the package has neither the test addon's sources nor the harness", async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { files: string[] };
  t.ok(pkg.files.includes('!addon/test/'), 'addon/test/ left out');
  t.notOk(
    pkg.files.some((f) => f.startsWith('test')),
    'test/ not listed',
  );
  const gyp = fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8');
  t.match(gyp, /"have_test": .*existsSync\('addon\/test\/binding\.cc'\)/, 'a tree without addon/test/ builds the product alone');
});
