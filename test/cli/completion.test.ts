/** `mfd completion bash|zsh|fish` and the man page: generated from the command tree, each naming every command and option. */
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Command } from 'commander';
import { tmpdir } from '../helpers/index.js';
import { bin } from '../helpers/files.js';
import { buildProgram } from '../../src/cli/main.js';
import type { CommandContext } from '../../src/cli/context.js';
import { SHELLS } from '../../src/cli/completion.js';

const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
const program: Command = buildProgram({} as CommandContext);
/** Every command and every flag of the tree, aliases and hidden ones included. */
const commands = program.commands.map((c) => c.name());
const flagsOf = (c: Command): string[] => c.options.flatMap((o) => [o.short, o.long]).filter((f): f is string => !!f);
const word = (s: string, w: string): boolean =>
  new RegExp(`(^|[\\s"'(|{,*])${w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}($|[\\s"'\\[)|=,}])`, 'm').test(s);

/** Each shell's `mfd completion SHELL`, run once: the tests below read the same outputs. */
const scripts = new Map(SHELLS.map((shell) => [shell, run('completion', shell)]));

t.test("every shell's script names every command and every option", async (t) => {
  t.ok(commands.includes('completion') && commands.includes('send') && commands.length >= 7);
  for (const shell of SHELLS) {
    const r = scripts.get(shell)!;
    t.equal(r.status, 0, r.stderr);
    const missing = [
      ...commands.filter((c) => !word(r.stdout, c)),
      ...flagsOf(program).filter((f) => !word(r.stdout, shell === 'fish' ? f.replace(/^--?/, '') : f)),
      ...program.commands.flatMap((c) =>
        flagsOf(c)
          .filter((f) => !word(r.stdout, shell === 'fish' ? f.replace(/^--?/, '') : f))
          .map((f) => `${c.name()} ${f}`),
      ),
    ];
    t.same(missing, [], `${shell}: nothing missing`);
  }
  // Aliases are options like the others.
  t.match(scripts.get('bash')!.stdout, /--multifd-zlib-level/);
  const bad = run('completion', 'tcsh');
  t.equal(bad.status, 2);
  t.match(bad.stderr, /Allowed choices are bash, zsh, fish/);
});

t.test('bash: the script parses (bash -n) and completes commands, options and choices', async (t) => {
  const dir = tmpdir(t);
  const script = path.join(dir, 'mfd.bash');
  fs.writeFileSync(script, scripts.get('bash')!.stdout);
  const syntax = spawnSync('bash', ['-n', script], { encoding: 'utf8' });
  t.equal(syntax.status, 0, syntax.stderr);
  const complete = (...words: string[]): string[] => {
    const r = spawnSync(
      'bash',
      [
        '-c',
        `source "$1"; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _mfd; printf '%s\\n' "\${COMPREPLY[@]}"`,
        'bash',
        script,
      ],
      { encoding: 'utf8', cwd: dir },
    );
    t.equal(r.status, 0, r.stderr);
    return r.stdout.split('\n').filter(Boolean).sort();
  };
  t.same(complete('mfd', 're'), ['recv']);
  t.same(complete('mfd', 'send', '--comp'), ['--compression']);
  t.same(complete('mfd', 'send', '--compression', 'z'), ['zlib', 'zstd']);
  t.same(complete('mfd', 'recv', '--log-level', 'w'), ['warn']);
  t.same(complete('mfd', 'completion', '-'), ['-h', '--help'].sort(), "a command's own options");
});

t.test('the man page comes from the same tree, and package.json lists it', async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(path.dirname(bin), '..', 'package.json'), 'utf8')) as { man: string[] };
  t.same(pkg.man, ['./dist/man/mfd.1']);
  const man = fs.readFileSync(path.join(path.dirname(bin), '..', 'dist', 'man', 'mfd.1'), 'utf8');
  t.match(man, /^\.TH MFD 1 /);
  const text = man.replace(/\\-/g, '-').replace(/\\f[BIR]/g, '');
  const missing = [
    ...commands.filter((c) => !text.includes(`.SS "mfd ${c} `)),
    ...program.commands.flatMap((c) =>
      flagsOf(c)
        .filter((f) => !word(text, f))
        .map((f) => `${c.name()} ${f}`),
    ),
  ];
  t.same(missing, [], 'every command has a section, every option an entry');
  t.match(text, /\.SH "EXIT STATUS"[\s\S]*143 +terminated \(SIGTERM\)/);
});
