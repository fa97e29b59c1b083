#!/usr/bin/env bash
# Installs the real clients the receivers' tests drive (engine/tests/integration/zipkin.rs,
# jaeger.rs, fluentforward.rs), once per manifest, and prints the directory that holds them:
#
#   export SHARDTEL_CLIENTS_DIR="$(tests/peers/clients/setup.sh)"
#
#   <dir>/otel/bin/python     OpenTelemetry Python SDK + Zipkin exporters, PyPI fluent-logger
#   <dir>/jaeger/bin/python   OpenTelemetry Python SDK 1.21 + Jaeger exporters (Thrift, gRPC)
#   <dir>/node/node_modules   npm fluent-logger (acks, PackedForward, CompressedPackedForward)
#
# Every version is pinned here (requirements-*.txt, package.json and package-lock.json); the
# directory is $SHARDTEL_CACHE_DIR (default ~/.cache/shardtel)/clients/<hash of them>, so a
# changed manifest installs anew. Needs python3 (with venv) and npm; Debian's python3-venv and
# npm are installed when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "clients setup: $*" >&2; }
hash=$(cat "$here/requirements-otel.txt" "$here/requirements-jaeger.txt" "$here/package.json" \
  "$here/package-lock.json" | sha256sum | cut -c1-16)
cache=${SHARDTEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shardtel}
dir="$cache/clients/$hash"
if [ -f "$dir/.done" ]; then
  echo "$dir"
  exit 0
fi
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -f "$dir/.done" ]; then
  echo "$dir"
  exit 0
fi
need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
for venv in otel jaeger; do
  rm -rf "${dir:?}/$venv"
  say "python venv $venv"
  python3 -m venv "$dir/$venv"
  "$dir/$venv/bin/pip" install -q --disable-pip-version-check --no-deps \
    -r "$here/requirements-$venv.txt" >&2
  "$dir/$venv/bin/pip" check >&2 || { say "pip check failed for $venv"; exit 1; }
done
say "npm fluent-logger"
rm -rf "$dir/node"
mkdir -p "$dir/node"
cp "$here/package.json" "$here/package-lock.json" "$dir/node/"
(cd "$dir/node" && npm ci --no-audit --no-fund --silent >&2)
touch "$dir/.done"
echo "$dir"
