# fixtures.sh - the reference configurations shared with the tests and the docs
# (tests/fixtures/), for the bench scripts. Source it once ROOT (the workspace) and die are set.
#
#   reference_sampling_policies   the [[processors.tail_sampling.policies]] tables of the
#                                 recommended policy (errors, slower than 1 s, user.id = "vip",
#                                 10 % of the rest), without its [processors.tail_sampling]
#                                 settings: each bench sets its own bounds
#   redaction_processor           the DESIGN.md redaction processor, [processors.redact]
#   write_config OUT BASE PART..  BASE followed by the output of each PART (one of the above)
#                                 into OUT, then checked with `shardtel validate` ($SHARDTEL_BIN)

FIXTURES=$ROOT/tests/fixtures

reference_sampling_policies() {
  local f=$FIXTURES/reference-sampling.toml out
  out=$(awk '/^\[\[processors\.tail_sampling\.policies\]\]/ {p = 1} p' "$f") || die "cannot read $f"
  [ -n "$out" ] || die "$f holds no [[processors.tail_sampling.policies]]"
  printf '%s\n' "$out"
}

redaction_processor() {
  local f=$FIXTURES/redaction.toml
  grep -q '^\[processors\.redact\]' "$f" || die "$f holds no [processors.redact]"
  cat "$f"
}

write_config() {
  local out=$1 base=$2 part
  shift 2
  { cat "$base" || die "cannot read $base"; for part in "$@"; do echo; "$part"; done; } >"$out"
  "$SHARDTEL_BIN" validate --config "$out" >/dev/null || die "$out (from $base and $*) does not validate"
}
