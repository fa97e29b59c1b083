#!/usr/bin/env bash
# Builds the Debian package of shardtel from this workspace:
#   packaging/deb/build.sh [--profile release|dev] [--out DIR]
# Prints the path of the .deb it wrote (DIR, default target/deb/).
#
# Contents: /usr/bin/shardtel and /usr/bin/shardtel-loadgen; /etc/shardtel/shardtel.toml (the
# embedded default with data_dir = /var/lib/shardtel; a conffile, so upgrades keep local
# changes); /lib/systemd/system/shardtel.service (packaging/shardtel.service); the docs under
# /usr/share/doc/shardtel. postinst creates the `shardtel` system user and /var/lib/shardtel
# (0700), then enables and starts the service on a first install (restarts it on an upgrade)
# when systemd runs.
#
# Needs only dpkg-deb (no debhelper, no cargo-deb: nothing to install or compile besides the
# workspace). `--profile release` (the default) builds optimised binaries; the test suite
# passes `--profile dev` to package the binaries its tests already built.
# SHARDTEL_DEB_NO_BUILD=1 packages target/<profile>/ as it is, without running cargo.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile=release
out=target/deb
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--profile release|dev] [--out DIR]" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release) bin_dir=target/release ;;
  dev) bin_dir=target/debug ;;
  *) echo "unknown profile $profile (release or dev)" >&2; exit 2 ;;
esac

if [ "${SHARDTEL_DEB_NO_BUILD:-}" != 1 ]; then
  # One package per invocation: built together, their dependencies' features would unify
  # differently from the test suite's builds, and each side would rebuild them every time.
  cargo build --profile "$profile" -p shardtel-engine --bin shardtel >&2
  cargo build --profile "$profile" -p shardtel-loadgen --bin shardtel-loadgen >&2
fi
for bin in shardtel shardtel-loadgen; do
  [ -x "$bin_dir/$bin" ] || { echo "$bin_dir/$bin is missing" >&2; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/etc/shardtel" \
  "$root/lib/systemd/system" "$root/usr/share/doc/shardtel"
install -m 0755 "$bin_dir/shardtel" "$bin_dir/shardtel-loadgen" "$root/usr/bin/"
if [ "$profile" = release ]; then
  strip --strip-debug "$root/usr/bin/shardtel" "$root/usr/bin/shardtel-loadgen"
fi

# The embedded default, with data_dir and the file exporters' paths in the one directory the
# unit may write to. It must still validate, and name no other path to write to.
"$bin_dir/shardtel" default-config \
  | sed -e 's|^data_dir = .*$|data_dir = "/var/lib/shardtel"|' \
    -e 's|^path = "\./shardtel-data/|path = "/var/lib/shardtel/|' >"$root/etc/shardtel/shardtel.toml"
grep -q '^data_dir = "/var/lib/shardtel"$' "$root/etc/shardtel/shardtel.toml" \
  || { echo "the default config has no data_dir line to set" >&2; exit 1; }
if grep -n '^[a-z_]* = "\.' "$root/etc/shardtel/shardtel.toml" >&2; then
  echo "the packaged config still names relative paths (above)" >&2
  exit 1
fi
"$bin_dir/shardtel" validate --config "$root/etc/shardtel/shardtel.toml" >&2
chmod 0644 "$root/etc/shardtel/shardtel.toml"

install -m 0644 packaging/shardtel.service "$root/lib/systemd/system/shardtel.service"
install -m 0644 README.md docs/operations.md docs/configuration.md "$root/usr/share/doc/shardtel/"
cat >"$root/usr/share/doc/shardtel/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: shardtel
License: Apache-2.0
 On Debian systems, the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
chmod 0644 "$root/usr/share/doc/shardtel/copyright"

# Shared libraries the binaries link (libc, libssl, libgcc_s, zlib): their packages, as
# dpkg-shlibdeps would find them, without needing a debian/ source tree.
depends=$(
  for bin in "$root/usr/bin/"*; do ldd "$bin"; done \
    | awk '/=> \//{print $3}' | sort -u \
    | while read -r lib; do dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true; done \
    | cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g'
)
[ -n "$depends" ] || { echo "could not find the packages of the linked libraries" >&2; exit 1; }

installed_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: shardtel
Version: $version
Architecture: $arch
Maintainer: shardtel developers <shardtel@localhost>
Installed-Size: $installed_kib
Depends: $depends
Section: net
Priority: optional
Homepage: https://opentelemetry.io/
Description: OpenTelemetry collector with one pinned reactor per CPU core
 shardtel receives OTLP traces, metrics and logs over gRPC and HTTP (or from
 Kafka), filters, rewrites and tail-samples them, and exports them to OTLP
 backends, Kafka, Prometheus remote write, Loki or files, with write-ahead logs
 so that nothing acknowledged is lost.
 .
 This package runs it as the systemd service shardtel.service on
 /etc/shardtel/shardtel.toml, as the system user shardtel, with its data in
 /var/lib/shardtel. It also ships the shardtel-loadgen load generator.
CONTROL
echo /etc/shardtel/shardtel.toml >"$root/DEBIAN/conffiles"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$root/DEBIAN/"

mkdir -p "$out"
deb="$out/shardtel_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
