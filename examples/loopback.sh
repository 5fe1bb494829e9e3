#!/usr/bin/env bash
# Two shells' worth of mfd on one host: a receiver, then a sender with 8 channels
# and two ramblocks (the second one named explicitly). Run from the repository root
# after `npm install`.
set -euo pipefail
mfd() { node "$(dirname "$0")/../bin/mfd.js" "$@"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mfd gen-image --size 64M --seed 7 "$work/vm1.ram"
mfd gen-image --size 16M --profile text --seed 8 "$work/vram.bin"
mkdir "$work/out"
mfd recv --listen 127.0.0.1:4444 --output "$work/out" &
recv=$!
sleep 0.5
mfd send --to 127.0.0.1:4444 --channels 8 "$work/vm1.ram" "vga.vram=$work/vram.bin"
wait "$recv"
cmp "$work/vm1.ram" "$work/out/vm1.ram" && cmp "$work/vram.bin" "$work/out/vga.vram" && echo "both ramblocks identical"
