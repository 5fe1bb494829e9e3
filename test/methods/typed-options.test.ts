/**
 * Method options are typed from the registry: each method declares its options, the registry's type
 * (MethodRegistry) is made of the methods' own declarations, and a caller that names a method gets
 * its parameters typed. The `@ts-expect-error` lines are the test at compile time: tsc -p
 * tsconfig.test.json (pretest) fails if any of them compiles. At run time: the compile-time registry
 * holds the same methods as the run-time one, and the one door from run-time names checks both.
 */
import t from 'tap';
import { getMethod, listMethods, methodChoice, type MethodChoice, type MethodName, type ParamsOfMethod } from '../../src/methods/index.js';
import { migrate } from '../../src/migrate/migrate.js';
import { silentLogger } from '../../src/log.js';

/** Takes what the library's send, saveToFile, migrate and sendQemu take: a method chosen by its literal name. */
const choose = <N extends MethodName>(c: MethodChoice<N>): MethodChoice<N> => c;

t.test('a misspelt, wrongly typed or foreign method option does not compile', async (t) => {
  const good = [
    choose({ compression: 'zstd', methodParams: { level: 3 } }),
    choose({ compression: 'qpl', methodParams: { swEngine: 'mfd' } }),
    choose({ compression: 'qatzip', methodParams: { level: 9, swFallback: false, swEngine: 'qatzip' } }),
    choose({ compression: 'none' }),
  ];
  // @ts-expect-error misspelt option
  choose({ compression: 'zstd', methodParams: { levle: 3 } });
  // @ts-expect-error wrongly typed: the level is a number
  choose({ compression: 'zlib', methodParams: { level: '3' } });
  // @ts-expect-error another method's option
  choose({ compression: 'zstd', methodParams: { swEngine: 'mfd' } });
  // @ts-expect-error not one of the choice's choices
  choose({ compression: 'qpl', methodParams: { swEngine: 'fast' } });
  // @ts-expect-error a bool option takes a boolean, not on/off
  choose({ compression: 'qatzip', methodParams: { swFallback: 'off' } });
  // @ts-expect-error no such method
  choose({ compression: 'gzip' });
  // @ts-expect-error none takes no parameter
  choose({ compression: 'none', methodParams: { level: 1 } });
  const typed: ParamsOfMethod<'qatzip'> = { level: 1, swFallback: true, swEngine: 'mfd' };
  // The library's own entry, never called: its options are checked the same way.
  const never = (): unknown =>
    migrate(
      { kind: 'file', path: '/x', offset: 0 },
      {
        images: [],
        channels: 1,
        pageSize: 4096,
        compression: 'zstd',
        // @ts-expect-error misspelt option through migrate()
        methodParams: { levle: 1 },
        zeroPageDetection: 'none',
        logger: silentLogger,
      },
    );
  t.equal(good.length, 4);
  t.ok(typed && never);
});

t.test('the compile-time registry holds the run-time registry: the same methods', async (t) => {
  // Exhaustive by its type: a method missing here, or a name no method declares, does not compile.
  const declared: Record<MethodName, true> = { none: true, zlib: true, zstd: true, lz4: true, qpl: true, qatzip: true };
  t.same(Object.keys(declared).sort(), [...listMethods()].sort());
});

t.test("each method's checked parameters have the types its options declare", async (t) => {
  for (const name of listMethods()) {
    const m = getMethod(name);
    let params: Record<string, unknown>;
    try {
      params = m.params({});
    } catch (e) {
      t.match((e as Error).message, /unavailable/, `${name}: its package does not load here`);
      continue;
    }
    t.same(Object.keys(params).sort(), m.options.map((o) => o.key).sort(), `${name}: one parameter per option`);
    for (const o of m.options) {
      const want = o.type === 'int' ? 'number' : o.type === 'bool' ? 'boolean' : 'string';
      t.equal(typeof params[o.key], want, `${name}.${o.key} is a ${want}`);
      if (o.type === 'choice') t.ok(o.choices.includes(params[o.key] as string), `${name}.${o.key} is one of its choices`);
    }
  }
});

t.test('the one door from run-time names: methodChoice checks the name and the parameters', async (t) => {
  t.same(methodChoice('zstd', { level: 5 }), { compression: 'zstd', methodParams: { level: 5, engine: 'libzstd' } });
  t.same(methodChoice('zlib', {}), { compression: 'zlib', methodParams: { level: 1 } }, 'defaults filled');
  t.throws(() => methodChoice('gzip', {}), {
    code: 'ERR_UNKNOWN_METHOD',
    message: /Expected one of none\|zlib\|zstd\|lz4\|qpl\|qatzip for --compression but received "gzip"/,
  });
  t.throws(() => methodChoice('zstd', { level: 99 }), {
    code: 'ERR_METHOD_PARAMS',
    message: /Expected an integer in 0\.\.20 for --zstd-level but received 99/,
  });
  t.throws(() => methodChoice('zstd', { levle: 1 }), { code: 'ERR_METHOD_PARAMS', message: /method zstd takes no parameter "levle"/ });
  t.throws(() => methodChoice('qatzip', { swFallback: 'off' }), {
    code: 'ERR_METHOD_PARAMS',
    message: /Expected on or off for --qatzip-sw-fallback/,
  });
});
