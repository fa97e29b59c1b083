#!/usr/bin/env bash
# Builds the OpenTelemetry Collector routing peer (main.go + go.mod + go.sum in this folder: the
# Collector's core and contrib modules at one release, contrib v0.148.0, every version pinned)
# once per manifest, and prints the binary's path on stdout; everything else goes to stderr.
#
#   export SHARDTEL_OTELCOL_ROUTING_BIN="$(tests/peers/otelcol-routing/build.sh)"
#
# Why a second Collector build beside ../otelcol: README.md. The build, the cache
# (~/.cache/shardtel/otelcol-routing/<hash of the manifest and build flags>/) and the Go it
# needs are those of ../go-build.sh, shared with the other Go peers.
#
# Env: SHARDTEL_CACHE_DIR, GO (the go command to use), OTELCOL_REBUILD=1 (build even when
# cached).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PEER_REBUILD=${OTELCOL_REBUILD:-${PEER_REBUILD:-}} exec "$here/../go-build.sh" "$here"
