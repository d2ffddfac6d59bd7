#!/usr/bin/env bash
# Builds the Debian package (scripts/build-deb.sh) and checks what it installs: the binary, the
# systemd unit, the configuration as a conffile, the docs, the man page and the completions; what
# the maintainer scripts do to the service on install, upgrade and removal (run against stand-ins
# for systemctl and deb-systemd-*, which log what they were asked); and, where dpkg allows, an
# install, a reinstall and a removal into a throwaway root. Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-deb.sh >/dev/null
DEB=$(ls -t target/debian/hookrace_*.deb | head -1)
echo "== $DEB"
CONTENTS=$(dpkg-deb -c "$DEB")
INFO=$(dpkg-deb -I "$DEB")
fail() { echo "check-deb: $*" >&2; exit 1; }
for path in ./usr/bin/hookrace ./usr/lib/systemd/system/hookrace.service ./etc/hookrace/config.toml \
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
# The unit runs the packaged binary by its full path, and sizes its task limit for tokio.
UNIT=$(dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/lib/systemd/system/hookrace.service)
grep -q "^ExecStart=/usr/bin/hookrace run " <<<"$UNIT" || fail "ExecStart is not /usr/bin/hookrace"
grep -q "^TasksMax=512$" <<<"$UNIT" || fail "TasksMax is not 512"
grep -q "^ Depends: .*init-system-helpers" <<<"$INFO" || fail "no init-system-helpers dependency"

# What the maintainer scripts do to the service, with stand-ins that log their arguments (and
# say the service was never enabled), and "systemd is running" pointed at a directory of ours.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bin" "$WORK/run-systemd"
for tool in systemctl deb-systemd-invoke deb-systemd-helper; do
  printf '#!/bin/sh\necho "%s $*" >> "%s/log"\n[ "$1 $2" != "--quiet was-enabled" ]\n' \
    "$tool" "$WORK" > "$WORK/bin/$tool"
  chmod +x "$WORK/bin/$tool"
done
for script in postinst prerm postrm; do
  dpkg-deb --ctrl-tarfile "$DEB" | tar -xO "./$script" \
    | sed -e "s|/run/systemd/system|$WORK/run-systemd|g" -e "s|/usr/bin/deb-systemd-helper|$WORK/bin/deb-systemd-helper|g" \
    > "$WORK/$script"
done
run() { : > "$WORK/log"; PATH="$WORK/bin:$PATH" sh "$WORK/$1" "${@:2}" || fail "$* failed"; cat "$WORK/log"; }
LOG=$(run postinst configure)
grep -q "systemctl --system daemon-reload" <<<"$LOG" || fail "install: no daemon-reload"
grep -Eq "deb-systemd-invoke|helper enable" <<<"$LOG" && fail "install: the service is started or enabled: $LOG"
LOG=$(run postinst configure 0.1.0-1)
grep -q "deb-systemd-invoke try-restart hookrace.service" <<<"$LOG" || fail "upgrade: no try-restart: $LOG"
LOG=$(run prerm upgrade 0.1.0-2)
grep -q "stop" <<<"$LOG" && fail "upgrade: the old package's prerm stops the service: $LOG"
LOG=$(run prerm remove)
grep -q "deb-systemd-invoke stop hookrace.service" <<<"$LOG" || fail "remove: the service is not stopped: $LOG"
LOG=$(run postrm remove)
grep -q "systemctl --system daemon-reload" <<<"$LOG" || fail "remove: no daemon-reload: $LOG"
echo "check-deb: maintainer scripts: install reloads only, upgrade try-restarts, remove stops"

# Install, reinstall and remove into a throwaway root, where this dpkg allows it (the scripts
# run outside the root, with the stand-ins).
ROOT="$WORK/root"
mkdir -p "$ROOT/var/lib/dpkg/info" "$ROOT/var/lib/dpkg/updates"
touch "$ROOT/var/lib/dpkg/status"
DPKG=(dpkg --root="$ROOT" --force-script-chrootless --force-not-root --force-depends --log=/dev/null)
if PATH="$WORK/bin:$PATH" "${DPKG[@]}" -i "$DEB" >"$WORK/dpkg.out" 2>&1; then
  [ -x "$ROOT/usr/bin/hookrace" ] || fail "dpkg -i: no /usr/bin/hookrace"
  [ -f "$ROOT/usr/lib/systemd/system/hookrace.service" ] || fail "dpkg -i: no unit"
  echo "# an operator's edit" >> "$ROOT/etc/hookrace/config.toml"
  PATH="$WORK/bin:$PATH" "${DPKG[@]}" --force-confold -i "$DEB" >>"$WORK/dpkg.out" 2>&1 \
    || fail "dpkg reinstall: $(cat "$WORK/dpkg.out")"
  grep -q "an operator's edit" "$ROOT/etc/hookrace/config.toml" || fail "an upgrade lost the edit"
  PATH="$WORK/bin:$PATH" "${DPKG[@]}" -r hookrace >>"$WORK/dpkg.out" 2>&1 || fail "dpkg -r: $(cat "$WORK/dpkg.out")"
  [ ! -e "$ROOT/usr/bin/hookrace" ] || fail "dpkg -r left the binary"
  [ -f "$ROOT/etc/hookrace/config.toml" ] || fail "dpkg -r removed the configuration (only purge may)"
  PATH="$WORK/bin:$PATH" "${DPKG[@]}" -P hookrace >>"$WORK/dpkg.out" 2>&1 || fail "dpkg -P: $(cat "$WORK/dpkg.out")"
  [ ! -e "$ROOT/etc/hookrace/config.toml" ] || fail "dpkg -P left the configuration"
  echo "check-deb: installed, reinstalled (the edited conffile kept), removed and purged in a throwaway root"
else
  echo "check-deb: skipped the throwaway-root install (this dpkg refused: $(tail -1 "$WORK/dpkg.out"))"
fi

# The man page and the completions are the binary's own (generated from its command line).
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/share/man/man1/hookrace.1.gz | gunzip \
  | grep -c "^.TH hookrace 1" >/dev/null || fail "the man page is not hookrace's"
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/share/bash-completion/completions/hookrace \
  | grep -c "complete .*-F _hookrace" >/dev/null || fail "the bash completion is not hookrace's"
echo "$INFO" | grep -E "^ (Package|Version|Architecture|Depends):"
echo "check-deb: ok"
