#!/usr/bin/env bash
# npm test's pretest: every check and build step the suite needs, in two lanes that run at once
# (each is single-threaded, and they share nothing: the linters read the sources, the builds write
# dist/), so a 2-core machine spends about half the time here that one after the other took.
#   lint:  eslint, prettier --check, clang-format (npm run lint)
#   build: tsc (dist/), the esbuild bundle, tsc over the sources and the tests (the type check of
#          the tests: the loader they run under does not check types), the JSON Schema and the man
#          page; then QEMU 10.0 and the test guest, fetched when not cached (their tests skip,
#          saying why, when they cannot be had)
# Fails when either lane fails; both run to the end, so one run shows every problem.
set -uo pipefail
cd "$(dirname "$0")/.."
npm run --silent lint &
lint=$!
build=0
{
  # tap compiles its plugin list into node_modules; after a fresh install that list still holds the
  # TypeScript plugin package.json turns off, and tap's own rebuild serves only the runs after it.
  npx --no-install tap build >/dev/null &&
    npx --no-install tsc -p tsconfig.json &&
    node scripts/bundle.mjs &&
    npx --no-install tsc -p tsconfig.test.json &&
    node scripts/json-schema.mjs &&
    node scripts/man.mjs
} || build=1
bash .ci/fetch-qemu10 >/dev/null || echo 'QEMU 10.0 could not be fetched: its tests will skip, saying why'
bash .ci/fetch-guest >/dev/null ||
  echo 'the test guest (kernel, busybox) could not be fetched: the booted-guest test will skip, saying why'
wait "$lint" || { echo 'pretest: npm run lint failed' >&2; exit 1; }
[ "$build" = 0 ] || { echo 'pretest: the build or the type check failed' >&2; exit 1; }
