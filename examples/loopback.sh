#!/usr/bin/env bash
# Two shells' worth of mfd on one host: a receiver, then a sender with 8 channels
# and two ramblocks (the second one named explicitly). Run from the repository root
# after `npm install`.
set -euo pipefail
mfd() { node "$(dirname "$0")/../bin/mfd.js" "$@"; }
work=$(mktemp -d)
recv=
# On any exit, a receiver still waiting goes too, then the files.
trap '[ -n "$recv" ] && kill "$recv" 2>/dev/null; rm -rf "$work"' EXIT
mfd gen-image --size 64M --seed 7 "$work/vm1.ram"
mfd gen-image --size 16M --profile text --seed 8 "$work/vram.bin"
mkdir "$work/out"
# Port 0: the system picks a free one, and the receiver says which on stderr.
mfd recv --listen 127.0.0.1:0 --output "$work/out" 2> >(tee "$work/recv.log" >&2) &
recv=$!
port=
# (|| true: until the receiver has written its log, sed fails, and set -e would end the script.)
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$work/recv.log" 2>/dev/null | head -1 || true)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "the receiver did not start listening" >&2; exit 1; }
mfd send --to "127.0.0.1:$port" --channels 8 "$work/vm1.ram" "vga.vram=$work/vram.bin"
wait "$recv"
recv=
cmp "$work/vm1.ram" "$work/out/vm1.ram" && cmp "$work/vram.bin" "$work/out/vga.vram" && echo "both ramblocks identical"
