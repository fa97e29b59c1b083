#!/usr/bin/env bash
# Tests the Debian package (run by ./test.sh; alone: packaging/deb/test.sh [--profile dev]):
# builds it with build.sh, checks its control data, unpacks it with `dpkg -x` into a scratch
# root and checks every file and mode, runs the unpacked binary on the unpacked config, runs
# postinst against a scratch root (DPKG_ROOT: a copy of this machine's user database) and
# checks the user, the data directory and the config's mode, and `systemd-analyze verify`s the
# unit. Exits non-zero with a message at the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=dev
[ "${1:-}" = --profile ] && profile="$2"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

deb=$(packaging/deb/build.sh --profile "$profile" --out "$scratch/out")
[ -f "$deb" ] || fail "build.sh printed no .deb ($deb)"
ok "built $(basename "$deb") ($(du -h "$deb" | cut -f1))"

# ---- control data
[ "$(dpkg-deb -f "$deb" Package)" = shardtel ] || fail "Package"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "Version is not $version"
depends=$(dpkg-deb -f "$deb" Depends)
for pkg in libc6 libssl3; do
  grep -qw "$pkg" <<<"$depends" || fail "Depends ($depends) lacks $pkg"
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/shardtel/shardtel.toml || fail "conffiles"
for script in postinst prerm postrm; do
  dpkg-deb -I "$deb" "$script" | head -1 | grep -q '^#!/bin/sh' || fail "$script"
done
ok "control: Depends: $depends; conffile /etc/shardtel/shardtel.toml"

# ---- contents: owners and modes as dpkg will install them
listing=$(dpkg-deb -c "$deb")
expect_entry() { # mode path
  grep -qE "^$1 root/root +[0-9]+ [0-9-]+ [0-9:]+ \./$2\$" <<<"$listing" \
    || fail "no $1 root/root ./$2 in:
$listing"
}
expect_entry -rwxr-xr-x usr/bin/shardtel
expect_entry -rwxr-xr-x usr/bin/shardtel-loadgen
expect_entry -rw-r--r-- etc/shardtel/shardtel.toml
expect_entry -rw-r--r-- lib/systemd/system/shardtel.service
expect_entry -rw-r--r-- usr/share/doc/shardtel/copyright
expect_entry -rw-r--r-- usr/share/doc/shardtel/operations.md
if grep -v ' root/root ' <<<"$listing"; then fail "entries not owned by root (above)"; fi
ok "contents: $(grep -c '' <<<"$listing") entries, all root/root"

root="$scratch/root"
dpkg -x "$deb" "$root"
[ "$(stat -c %a "$root/usr/bin/shardtel")" = 755 ] || fail "shardtel's mode"
"$root/usr/bin/shardtel" --version | head -1 | grep -qx "shardtel $version" || fail "--version"
"$root/usr/bin/shardtel-loadgen" --help >/dev/null || fail "shardtel-loadgen --help"
config="$root/etc/shardtel/shardtel.toml"
grep -qx 'data_dir = "/var/lib/shardtel"' "$config" || fail "data_dir in the packaged config"
if grep -n 'shardtel-data' "$config" | grep -v '^[0-9]*:#'; then fail "paths outside /var/lib/shardtel"; fi
"$root/usr/bin/shardtel" validate --config "$config" >/dev/null || fail "the packaged config does not validate"
# Apart from data_dir and paths, the packaged config is the embedded default.
diff <("$root/usr/bin/shardtel" default-config | grep -v -e '^data_dir = ' -e '^path = ') \
  <(grep -v -e '^data_dir = ' -e '^path = ' "$config") >/dev/null \
  || fail "the packaged config differs from the embedded default"
ok "dpkg -x: binaries run, the config is the default with data_dir = /var/lib/shardtel"

# ---- the unit
unit="$root/lib/systemd/system/shardtel.service"
for line in 'Type=notify' 'User=shardtel' 'ExecStart=/usr/bin/shardtel --config /etc/shardtel/shardtel.toml' \
  'ExecReload=/bin/kill -HUP $MAINPID' 'ProtectSystem=strict' 'ReadWritePaths=/var/lib/shardtel' \
  'NoNewPrivileges=yes' 'LimitMEMLOCK=infinity' 'LimitNOFILE=1048576' 'CapabilityBoundingSet=' \
  'WantedBy=multi-user.target'; do
  grep -qxF "$line" "$unit" || fail "the unit lacks $line"
done
if grep -E '^AmbientCapabilities=' "$unit"; then fail "capabilities granted by default"; fi
grep -qxF '#AmbientCapabilities=CAP_NET_BIND_SERVICE' "$unit" || fail "no note on ports below 1024"
if command -v systemd-analyze >/dev/null; then
  # The unit as installed: its commands resolved in the scratch root, which gets (besides the
  # package) the host's /bin/kill and systemd's own units (sysinit.target, ...) to resolve
  # against, never replacing a file of the package.
  cp -n /lib/systemd/system/*.target "$root/lib/systemd/system/" 2>/dev/null || true
  [ -e "$root/bin" ] || ln -s usr/bin "$root/bin"
  [ -e "$root/usr/bin/kill" ] || cp /bin/kill "$root/usr/bin/kill"
  if ! out=$(systemd-analyze verify --man=no --generators=no --root="$root" \
      /lib/systemd/system/shardtel.service 2>&1); then
    fail "systemd-analyze verify:
$out"
  fi
  [ -z "$out" ] || fail "systemd-analyze verify warns:
$out"
  ok "systemd-analyze verify: clean ($(systemd-analyze --version | head -1))"
else
  echo "!!!!!!!! SKIPPED systemd-analyze verify: systemd-analyze is not installed !!!!!!!!"
fi

# ---- postinst against a scratch root with a copy of this machine's user database
for f in passwd group shadow gshadow login.defs; do
  if [ -f "/etc/$f" ]; then cp -p "/etc/$f" "$root/etc/$f"; fi
done
grep -q '^shardtel:' "$root/etc/passwd" && sed -i '/^shardtel:/d' "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" "$root/etc/gshadow"
dpkg-deb -e "$deb" "$scratch/control"
for run in first again; do
  DPKG_ROOT="$root" sh "$scratch/control/postinst" configure "" \
    || fail "postinst configure ($run)"
done
entry=$(grep '^shardtel:' "$root/etc/passwd") || fail "postinst made no shardtel user"
[ "$(grep -c '^shardtel:' "$root/etc/passwd")" = 1 ] || fail "the user was added twice"
IFS=: read -r _ _ uid gid _ home shell <<<"$entry"
min_uid=$(awk '$1 == "SYS_UID_MAX" { print $2 }' /etc/login.defs 2>/dev/null)
[ "$uid" -lt "${min_uid:-1000}" ] || fail "shardtel is not a system user (uid $uid)"
[ "$home" = /var/lib/shardtel ] && [ "$shell" = /usr/sbin/nologin ] || fail "home/shell: $entry"
grep -q "^shardtel:x:$gid:" "$root/etc/group" || fail "no shardtel group with gid $gid"
[ "$(stat -c '%a %u %g' "$root/var/lib/shardtel")" = "700 $uid $gid" ] \
  || fail "/var/lib/shardtel is $(stat -c '%a %u %g' "$root/var/lib/shardtel"), not 700 $uid $gid"
[ "$(stat -c '%a %u %g' "$config")" = "640 0 $gid" ] \
  || fail "the config is $(stat -c '%a %u %g' "$config"), not 640 root:shardtel"
ok "postinst: system user shardtel ($uid:$gid, nologin), /var/lib/shardtel 0700, config 0640 root:shardtel; twice is idempotent"
echo "package test passed: $deb"
