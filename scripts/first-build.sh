#!/usr/bin/env bash
# A teacher's first build, timed: clones this repository at COMMIT (default HEAD) into a fresh
# directory, downloads the crates, then times the build from nothing (with `--timings`:
# target/cargo-timings/ shows where the time went). PROFILE is `dev` (default: what the README's
# `cargo run -- demo` builds) or `release` (what `cargo install` and the Debian package build).
# Run nothing else meanwhile.
#   scripts/first-build.sh                    # this checkout's HEAD, the demo's build
#   scripts/first-build.sh HEAD release       # the optimised build
#   scripts/first-build.sh 37b3f7f release    # before the workspace, the README's `--release` demo
set -euo pipefail
commit=${1:-HEAD}
profile=${2:-dev}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
cd "$work/clone"
git checkout -q "$commit"
cargo fetch -q
start=$(date +%s%N)
cargo build --profile "$profile" --timings >/dev/null 2>&1
ms=$(( ($(date +%s%N) - start) / 1000000 ))
printf 'first %s build of %s: %d.%03d s\n' "$profile" "$(git rev-parse --short HEAD)" $((ms / 1000)) $((ms % 1000))
