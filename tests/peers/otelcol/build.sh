#!/usr/bin/env bash
# Builds the OpenTelemetry Collector peer (main.go + go.mod + go.sum in this folder: the
# Collector's core and contrib modules at one release, every version pinned) once per
# manifest, and prints the binary's path on stdout; everything else goes to stderr.
#
#   export SHARDTEL_OTELCOL_BIN="$(tests/peers/otelcol/build.sh)"
#
# The binary is cached under $SHARDTEL_CACHE_DIR (default ~/.cache/shardtel) in
# otelcol/<hash of the manifest and build flags>/, so a changed manifest builds anew and an
# unchanged one is found at once, also from a fresh clone. Go's own caches (GOMODCACHE,
# GOCACHE; by default ~/go/pkg/mod and ~/.cache/go-build) are kept between runs too, so a
# rebuild after a manifest change downloads and compiles only what changed.
#
# Go: the version named by go.mod's `go` line or newer. A Go from 1.21 on that is older
# fetches that toolchain from the Go module proxy by itself (GOTOOLCHAIN). Without any
# such Go the script installs Debian's golang-go when that is new enough, and otherwise
# stops and says what to install.
#
# Env: SHARDTEL_CACHE_DIR, GO (the go command to use), OTELCOL_REBUILD=1 (build even when
# cached).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "otelcol build: $*" >&2; }

build_flags="-trimpath -ldflags=-s_-w"
hash=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" <(echo "$build_flags") | sha256sum | cut -c1-16)
cache=${SHARDTEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shardtel}
dir="$cache/otelcol/$hash"
bin="$dir/otelcol"
if [ -x "$bin" ] && [ -z "${OTELCOL_REBUILD:-}" ]; then
  echo "$bin"
  exit 0
fi

# ---- a Go new enough for go.mod --------------------------------------------------------
need=$(sed -nE 's/^go ([0-9.]+)$/\1/p' "$here/go.mod")
# version_ge A B: A >= B for dotted versions (1.26.0, 1.19)
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$2" ]; }
go_version() { "$1" env GOVERSION 2>/dev/null | sed -nE 's/^go([0-9.]+).*/\1/p'; }
find_go() {
  local g
  for g in "${GO:-}" "$(command -v go || true)" /usr/local/go/bin/go /usr/lib/go/bin/go; do
    [ -n "$g" ] && [ -x "$g" ] && { echo "$g"; return 0; }
  done
  return 1
}
go=$(find_go || true)
if [ -z "$go" ] || ! version_ge "$(go_version "$go")" 1.21; then
  # Debian's golang-go, if its version (e.g. 2:1.19~1) can build go.mod directly or through
  # a toolchain switch (Go 1.21 and later).
  candidate=$(apt-cache policy golang-go 2>/dev/null | sed -nE 's/^ *Candidate: ([0-9]+:)?([0-9.]+).*/\2/p')
  if [ -n "$candidate" ] && version_ge "$candidate" 1.21; then
    say "installing Debian's golang-go $candidate"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null
    go=$(find_go || true)
  fi
fi
if [ -z "$go" ] || ! version_ge "$(go_version "$go")" 1.21; then
  say "no Go 1.21 or newer here ($( [ -n "$go" ] && "$go" version || echo 'no go command'); Debian offers golang-go ${candidate:-?})."
  say "Install Go $need or newer: the official tarball unpacked to /usr/local/go, with"
  say "/usr/local/go/bin on PATH (any Go from 1.21 also works: it fetches go$need itself),"
  say "or point GO= at one. Or build nothing and set SHARDTEL_OTELCOL_BIN to a Collector"
  say "with the components of $here/main.go."
  exit 1
fi
have=$(go_version "$go")
toolchain=local
if ! version_ge "$have" "$need"; then
  toolchain="go$need"
  say "go $have is older than go.mod's $need: GOTOOLCHAIN=$toolchain (fetched from the Go module proxy)"
fi

# ---- build (one at a time per cache; the binary appears whole or not at all) -------------
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -x "$bin" ] && [ -z "${OTELCOL_REBUILD:-}" ]; then
  echo "$bin"
  exit 0
fi
say "building the OpenTelemetry Collector ($(sed -nE 's/^\s*go.opentelemetry.io\/collector\/otelcol (v[0-9.]+)$/core \1/p' "$here/go.mod"), go $have) into $dir"
start=$(date +%s)
# -mod=readonly: go.mod and go.sum are the manifest; the build never changes them. In the
# background, in its own process group (set -m), and waited for, so that a TERM (test.sh
# stopping early) stops the go command and the compilers and linker it started.
set -m
(cd "$here" && exec env GOTOOLCHAIN="$toolchain" GOFLAGS="-mod=readonly -buildvcs=false" \
  "$go" build -trimpath -ldflags='-s -w' -o "$bin.tmp" .) >&2 &
gopid=$!
set +m
trap 'kill -TERM -- -"$gopid" 2>/dev/null; rm -f "$bin.tmp"; exit 143' TERM INT
wait "$gopid" || { say "go build failed"; exit 1; }
trap - TERM INT
mv "$bin.tmp" "$bin"
say "built in $(( $(date +%s) - start )) s: $bin ($(du -m "$bin" | cut -f1) MiB)"
echo "$bin"
