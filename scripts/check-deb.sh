#!/usr/bin/env bash
# Builds the Debian package (scripts/build-deb.sh) and checks what it installs: the binary, the
# systemd unit, the configuration as a conffile, the docs, the man page and the completions. Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-deb.sh >/dev/null
DEB=$(ls -t target/debian/hookrace_*.deb | head -1)
echo "== $DEB"
CONTENTS=$(dpkg-deb -c "$DEB")
INFO=$(dpkg-deb -I "$DEB")
fail() { echo "check-deb: $*" >&2; exit 1; }
for path in ./usr/bin/hookrace ./lib/systemd/system/hookrace.service ./etc/hookrace/config.toml \
            ./usr/share/doc/hookrace/deploy.md ./usr/share/doc/hookrace/accesslink-setup.md \
            ./usr/share/doc/hookrace/notify.md ./usr/share/doc/hookrace/architecture.md \
            ./usr/share/doc/hookrace/simulator.md ./usr/share/doc/hookrace/educators.md \
            ./usr/share/doc/hookrace/performance.md ./usr/share/man/man1/hookrace.1.gz \
            ./usr/share/bash-completion/completions/hookrace \
            ./usr/share/zsh/vendor-completions/_hookrace \
            ./usr/share/fish/vendor_completions.d/hookrace.fish; do
  grep -q " $path\$" <<<"$CONTENTS" || fail "missing $path"
done
grep -Eq -- "^-rwxr-xr-x (root/root|0/0) .* ./usr/bin/hookrace$" <<<"$CONTENTS" || fail "the binary is not 0755, owned by root"
grep -Eq -- "^-rw-r----- (root/root|0/0) .* ./etc/hookrace/config.toml$" <<<"$CONTENTS" \
  || fail "the configuration is not 0640, owned by root"
grep -q "^ Package: hookrace$" <<<"$INFO" || fail "no package name"
grep -q "^ Depends: .*libc6" <<<"$INFO" || fail "no libc dependency"
# The conffile is declared, so apt keeps an operator's edits on upgrade.
dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles | grep -qx "/etc/hookrace/config.toml" \
  || fail "config.toml is not a conffile"
# systemd learns of the unit on install and forgets it on removal.
for script in postinst postrm; do
  dpkg-deb --ctrl-tarfile "$DEB" | tar -xO "./$script" | grep -q "systemctl daemon-reload" \
    || fail "$script does not run systemctl daemon-reload"
done
# The man page and the completions are the binary's own (generated from its command line).
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/share/man/man1/hookrace.1.gz | gunzip \
  | grep -c "^.TH hookrace 1" >/dev/null || fail "the man page is not hookrace's"
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/share/bash-completion/completions/hookrace \
  | grep -c "complete .*-F _hookrace" >/dev/null || fail "the bash completion is not hookrace's"
echo "$INFO" | grep -E "^ (Package|Version|Architecture|Depends):"
echo "check-deb: ok"
