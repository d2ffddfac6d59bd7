#!/usr/bin/env bash
# Builds the Debian package: the optimised binary, then the man page and the bash, zsh and fish
# completions it generates from its own command line (into target/assets/), then `cargo deb`
# without building again. Needs cargo-deb (`cargo install cargo-deb`).
#   scripts/build-deb.sh      # target/debian/hookrace_<version>_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
mkdir -p target/assets
bin=target/release/hookrace
"$bin" man > target/assets/hookrace.1
gzip -9nf target/assets/hookrace.1
"$bin" completions bash > target/assets/hookrace.bash
"$bin" completions zsh > target/assets/_hookrace
"$bin" completions fish > target/assets/hookrace.fish
cargo deb --locked --no-build "$@"
