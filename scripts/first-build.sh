#!/usr/bin/env bash
# A teacher's first build, timed: clones this repository at COMMIT (default HEAD) into a fresh
# directory, downloads the crates, then times `cargo build --release` from nothing (with
# `--timings`: target/cargo-timings/ shows where the time went). Run nothing else meanwhile.
#   scripts/first-build.sh            # this checkout's HEAD
#   scripts/first-build.sh d00b35a    # the round's starting point, for the README's comparison
set -euo pipefail
commit=${1:-HEAD}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
git checkout -q "$commit"
cargo fetch -q
start=$(date +%s%N)
cargo build --release --timings >/dev/null 2>&1
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'first build of %s: %d.%03d s\n' "$(git rev-parse --short HEAD)" $((ms / 1000)) $((ms % 1000))
