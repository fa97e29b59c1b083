#!/usr/bin/env bash
# Builds one Go peer from its manifest folder, once per manifest, and prints the binary's path
# on stdout; everything else goes to stderr.
#
#   tests/peers/go-build.sh tests/peers/jaeger        # -> ~/.cache/shardtel/jaeger/<hash>/jaeger
#
# A peer folder holds go.mod and go.sum (every module pinned) and either main.go (the program
# is the folder's own package, as for the Collector) or a single `tool` line in go.mod (the
# program is that package of a pinned module: `go get -tool PKG@VERSION`). An optional file
# `ldflags` adds linker flags (the `-X` version stamps the projects' own Makefiles set).
#
# The binary is cached under $SHARDTEL_CACHE_DIR (default ~/.cache/shardtel) in
# <name>/<hash of the manifest and build flags>/<name>, so a changed manifest builds anew and
# an unchanged one is found at once, also from a fresh clone. Go's own caches (GOMODCACHE,
# GOCACHE; by default ~/go/pkg/mod and ~/.cache/go-build) are kept between runs too, so a
# rebuild after a manifest change downloads and compiles only what changed.
#
# Go: the version named by go.mod's `go` line or newer. A Go from 1.21 on that is older
# fetches that toolchain from the Go module proxy by itself (GOTOOLCHAIN). Without any
# such Go the script installs Debian's golang-go when that is new enough, and otherwise
# stops and says what to install.
#
# Env: SHARDTEL_CACHE_DIR, GO (the go command to use), PEER_REBUILD=1 (build even when cached).
set -euo pipefail
[ $# -eq 1 ] && [ -f "$1/go.mod" ] || { echo "usage: $0 PEER_DIR (a folder with go.mod)" >&2; exit 2; }
here=$(cd "$1" && pwd)
name=$(basename "$here")
say() { echo "$name build: $*" >&2; }

if [ -f "$here/main.go" ]; then
  target=.
  sources=("$here/go.mod" "$here/go.sum" "$here/main.go")
else
  target=$(sed -nE 's/^tool ([^ ]+)$/\1/p' "$here/go.mod")
  [ "$(printf '%s\n' "$target" | grep -c .)" = 1 ] \
    || { say "go.mod needs main.go beside it or exactly one 'tool' line"; exit 2; }
  sources=("$here/go.mod" "$here/go.sum")
fi
extra_ldflags=""
if [ -f "$here/ldflags" ]; then extra_ldflags=$(tr '\n' ' ' <"$here/ldflags" | sed 's/ *$//'); fi
build_flags="-trimpath -ldflags=-s_-w"
[ -z "$extra_ldflags" ] || build_flags="$build_flags $extra_ldflags"
hash=$(cat "${sources[@]}" <(echo "$build_flags") | sha256sum | cut -c1-16)
cache=${SHARDTEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shardtel}
dir="$cache/$name/$hash"
bin="$dir/$name"
if [ -x "$bin" ] && [ -z "${PEER_REBUILD:-}" ]; then
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
  say "or point GO= at one. Or build nothing and point the tests at a $name binary"
  say "(see $here/README.md or tests/peers/README.md)."
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
if [ -x "$bin" ] && [ -z "${PEER_REBUILD:-}" ]; then
  echo "$bin"
  exit 0
fi
say "building $target (go $have) into $dir"
start=$(date +%s)
# -mod=readonly: go.mod and go.sum are the manifest; the build never changes them. In the
# background, in its own process group (set -m), and waited for, so that a TERM (test.sh
# stopping early) stops the go command and the compilers and linker it started.
set -m
(cd "$here" && exec env GOTOOLCHAIN="$toolchain" GOFLAGS="-mod=readonly -buildvcs=false" \
  "$go" build -trimpath -ldflags="-s -w${extra_ldflags:+ $extra_ldflags}" -o "$bin.tmp" "$target") >&2 &
gopid=$!
set +m
trap 'kill -TERM -- -"$gopid" 2>/dev/null; rm -f "$bin.tmp"; exit 143' TERM INT
wait "$gopid" || { say "go build failed"; exit 1; }
trap - TERM INT
mv "$bin.tmp" "$bin"
say "built in $(( $(date +%s) - start )) s: $bin ($(du -m "$bin" | cut -f1) MiB)"
echo "$bin"
