/** The habits operators expect of a CLI: durations with suffixes, -v/-q, progress on a terminal, --version, signals. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { commonOptions, durationInRange, formatDuration, parseDuration, settleCommonOptions } from '../../src/cli/options.js';
import { shiftLevel } from '../../src/log.js';
import { makeImage, tmpdir } from '../helpers/index.js';
import { mfdRecv } from '../helpers/procs.js';
import { asMfdError } from '../../src/errors.js';
import { compiledEngines } from '../../src/accel/report.js';

t.test('durations: seconds by default, ms/s/m/h suffixes', async (t) => {
  t.equal(parseDuration('10'), 10_000);
  t.equal(parseDuration('1.5'), 1500);
  t.equal(parseDuration('500ms'), 500);
  t.equal(parseDuration('90s'), 90_000);
  t.equal(parseDuration('2m'), 120_000);
  t.equal(parseDuration('1h'), 3_600_000);
  t.equal(parseDuration('2 m'), null);
  t.equal(parseDuration('-1'), null);
  t.equal(parseDuration('1d'), null);
  t.equal(formatDuration(10_000), '10s');
  t.equal(formatDuration(500), '500ms');
  t.equal(formatDuration(120_000), '2m');
  const p = durationInRange('--connect-timeout', 1, 3_600_000);
  t.equal(p('200ms'), 200);
  t.equal(p('10'), 10_000);
  t.throws(() => p('0'), InvalidArgumentError);
  // The old meaning of --connect-timeout (milliseconds), past the range as seconds: the error says how to write it.
  t.throws(() => p('10000'), {
    message:
      /Expected a duration in 1ms\.\.1h for --connect-timeout .* received "10000" \(a bare number is seconds: for milliseconds write 10000ms\)/,
  });
  t.throws(() => p('2h'), { message: /received "2h"\.$/ });
});

const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'mfd.js');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
/** A shell command line run with its stdin, stdout and stderr on a pseudo-terminal (util-linux script); what the terminal showed. */
const onTerminal = (cmdline: string) => spawnSync('script', ['-qec', cmdline, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
const node = `${q(process.execPath)} ${q(bin)}`;

t.test('progress shows whenever stderr is a terminal, also with stdout redirected; --progress/--no-progress force it', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'a.ram'), 1 << 20, 'random');
  const json = path.join(dir, 'out.json');
  const tty = onTerminal(`${node} send --to file:${q(path.join(dir, 'm1'))} --json ${q(img)} > ${q(json)}`);
  t.equal(tty.status, 0, tty.stdout);
  t.match(tty.stdout, /\rsave: 1\.00 MiB \/ 1\.00 MiB \(100\.0%\)/, 'the progress line was drawn on the terminal');
  t.equal(JSON.parse(fs.readFileSync(json, 'utf8')).status, 'completed', 'stdout, redirected, holds the JSON alone');
  const off = onTerminal(`${node} send --to file:${q(path.join(dir, 'm2'))} --no-progress --json ${q(img)} > ${q(json)}`);
  t.equal(off.status, 0, off.stdout);
  t.notMatch(off.stdout, /save:/, '--no-progress: none on a terminal');
  const quiet = onTerminal(`${node} send --to file:${q(path.join(dir, 'm3'))} -q --json ${q(img)} > ${q(json)}`);
  t.notMatch(quiet.stdout, /save:/, '-q: none on a terminal');

  const piped = run('send', '--to', `file:${path.join(dir, 'm4')}`, '--json', img);
  t.equal(piped.status, 0, piped.stderr);
  t.notMatch(piped.stderr, /save:/, 'none when stderr is not a terminal');
  const forced = run('send', '--to', `file:${path.join(dir, 'm5')}`, '--progress', '--json', img);
  t.equal(forced.status, 0, forced.stderr);
  t.match(forced.stderr, /^save: 1\.00 MiB \/ 1\.00 MiB \(100\.0%\), .* ETA 0\.0 s$/m, '--progress: plain lines on a pipe');
  // eslint-disable-next-line no-control-regex -- the escape is what this looks for
  t.notMatch(forced.stderr, /\r|\x1b/, 'no terminal control characters on a pipe');
});

t.test('logs are text lines on a terminal, JSON lines otherwise; -q and -v move the level', async (t) => {
  const dir = tmpdir(t);
  const img = makeImage(path.join(dir, 'a.ram'), 8192, 'random');
  // Unauthenticated to a non-loopback address: a warning, then the connection fails (exit 4).
  const args = ['send', '--to', '192.0.2.1:9', '--connect-timeout', '300ms', img];
  const tty = onTerminal(`NO_COLOR=1 ${node} ${args.map(q).join(' ')}`);
  t.equal(tty.status, 4, tty.stdout);
  t.match(tty.stdout, /^\[\d\d:\d\d:\d\d\] WARN: sending to 192\.0\.2\.1 without authentication/m, 'a plain text line');
  t.notMatch(tty.stdout, /"level"/, 'no JSON on the terminal');
  const piped = run(...args);
  t.equal(piped.status, 4);
  const line = piped.stderr.split('\n').find((l) => l.startsWith('{'));
  t.match(JSON.parse(line!), { level: 40, msg: /sending to 192\.0\.2\.1 without authentication/ }, 'a JSON line on a pipe');
  const quiet = run(...args, '-q');
  t.equal(quiet.status, 4);
  t.notMatch(quiet.stderr, /without authentication/, '-q: warnings are below the level');
  t.match(quiet.stderr, /mfd send: error: control channel: cannot connect/, 'the error itself still shows');
});

t.test('-v and -q shift --log-level one step each', async (t) => {
  t.equal(shiftLevel('warn', 1, 0), 'info');
  t.equal(shiftLevel('warn', 2, 0), 'debug');
  t.equal(shiftLevel('warn', 5, 0), 'trace');
  t.equal(shiftLevel('warn', 0, 1), 'error');
  t.equal(shiftLevel('info', 0, 9), 'silent');
  const seen: { logLevel: string; progress: boolean }[] = [];
  const prog = (): Command => {
    const c = new Command('x').exitOverride();
    for (const o of commonOptions()) c.addOption(o);
    return c.action(() => void seen.push(c.opts()));
  };
  for (const [argv, tty] of [
    [['-vv'], false],
    [['-q'], true],
    [['--log-level', 'error', '-v', '--progress'], false],
    [[], true],
  ] as const) {
    const c = prog();
    c.hook('preAction', (_, a) => settleCommonOptions(a, tty));
    await c.parseAsync([...argv], { from: 'user' });
  }
  t.match(seen, [
    { logLevel: 'debug', progress: false },
    { logLevel: 'error', progress: false },
    { logLevel: 'warn', progress: true },
    { logLevel: 'warn', progress: true },
  ]);
});

t.test('SIGTERM exits 143, SIGINT 130', async (t) => {
  for (const [sig, code] of [
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const) {
    const out = tmpdir(t);
    const r = await mfdRecv(t, ['--output', out, '--json']);
    r.p.kill(sig);
    const e = await r.done;
    t.equal(e.code, code, `${sig}: exit ${code}`);
    t.match(e.stderr, new RegExp(`mfd recv: error: interrupted by ${sig} \\[ERR_INTERRUPTED\\]`));
    t.match(JSON.parse(e.stdout), { status: 'failed', error: { code: 'ERR_INTERRUPTED' } });
  }
  const help = run('--help');
  t.match(help.stdout, /130 +interrupted \(SIGINT, Ctrl-C\)\n +143 +terminated \(SIGTERM\)/);
});

t.test('expected conditions are not "a bug in mfd"', async (t) => {
  const dir = tmpdir(t);
  const file = path.join(dir, 'taken');
  fs.writeFileSync(file, 'x');
  const b = run(
    'bench',
    '--out',
    file,
    '--size',
    '1M',
    '--peers',
    'none',
    '--runs',
    '1',
    '--warmup',
    '0',
    '--compression',
    'none',
    '--channels',
    '1',
    '--no-progress',
  );
  t.equal(b.status, 2, b.stderr);
  t.match(b.stderr, /^mfd bench: error: --out ".*taken" exists and is not a directory/m);
  t.notMatch(b.stderr, /a bug in mfd|\n\s+at /, 'no bug, no stack trace');
  const done = path.join(dir, 'done');
  fs.mkdirSync(done);
  fs.writeFileSync(path.join(done, 'results.jsonl'), '{}\n');
  const again = run('bench', '--out', done, '--size', '1M', '--peers', 'none', '--no-progress');
  t.equal(again.status, 2);
  t.match(again.stderr, /already holds results \(results\.jsonl\)/);
  t.equal(fs.readFileSync(path.join(done, 'results.jsonl'), 'utf8'), '{}\n', 'earlier results untouched');
  // Whatever system call fails on a file or directory is an I/O condition (exit 6), a network one a connection failure (exit 4).
  const errno = (code: string, syscall: string): NodeJS.ErrnoException =>
    Object.assign(new Error(`${code}: failed, ${syscall} '/x'`), { code, syscall });
  t.match(asMfdError(errno('EEXIST', 'mkdir')), { code: 'ERR_EEXIST', exitCode: 6 });
  t.match(asMfdError(errno('ENOTDIR', 'open')), { code: 'ERR_ENOTDIR', exitCode: 6 });
  t.match(asMfdError(errno('ENOTFOUND', 'getaddrinfo')), { code: 'ERR_ENOTFOUND', exitCode: 4 });
  t.match(asMfdError(new TypeError('x is undefined')), { code: 'ERR_INTERNAL', exitCode: 1 }, 'a programming error stays a bug');
});

t.test('--version comes from package.json and names the engines compiled in', async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(path.dirname(bin), '..', 'package.json'), 'utf8')) as { version: string };
  const v = run('--version');
  t.equal(v.status, 0);
  const e = compiledEngines();
  t.match(v.stdout, new RegExp(`^mfd ${pkg.version.replace(/\./g, '\\.')}\n`));
  t.match(v.stdout, `zlib ${e.zlib}`);
  t.match(v.stdout, `isa-l ${e.isal ?? 'not compiled'}`);
  t.match(v.stdout, `lz4 ${e.lz4 ?? 'not compiled'}`);
  t.match(v.stdout, `zstd ${e.zstd ?? 'not compiled'}`);
  t.match(v.stdout, `xxhash ${e.xxhash ?? 'not compiled'}`);
  t.match(v.stdout, `qpl ${e.qpl.version ?? 'not compiled'}`);
  t.match(v.stdout, `qatzip ${e.qatzip.version ?? 'not compiled'}`);
  t.equal(run('-V').stdout, v.stdout);
});
