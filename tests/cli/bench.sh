#!/usr/bin/env bash
# The benchmarks run end to end at a tiny size and print what docs/benchmarks.md
# quotes: every suite's --json object parses and carries its fields, with
# positive measurements. No speed is asserted (speed is `make bench`'s job);
# this catches a benchmark that crashes, fails its own verification or stops
# printing a figure.
set -u
pk=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

# run NAME CMD...: exit 0, JSON lines kept in $work/NAME.json
run() {
    local name=$1; shift
    if "$@" >"$work/$name.out" 2>"$work/$name.err"; then ok; else
        bad "$name: exit $?"; cat "$work/$name.err"; fi
    grep '^{' "$work/$name.out" >"$work/$name.json" || true
}

# fields NAME KEY...: the JSON objects parse; each KEY is in one of them and
# positive in every object holding it (KEY=0: zero in every one)
fields() {
    local name=$1; shift
    if python3 - "$work/$name.json" "$@" <<'EOF'; then ok; else bad "$name fields"; cat "$work/$name.out"; fi
import json, sys
objs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not objs:
    sys.exit("no JSON object")
for arg in sys.argv[2:]:
    key, zero = (arg[:-2], True) if arg.endswith("=0") else (arg, False)
    vals = [o[key] for o in objs if key in o]
    if not vals:
        sys.exit(f"{key}: missing")
    good = (lambda v: v == 0) if zero else (lambda v: v > 0)
    if not all(isinstance(v, (int, float)) and good(v) for v in vals):
        sys.exit(f"{key}: {vals}")
EOF
}

run micro "$pk" bench kdf aead record link --json --rounds 1 --round-ms 20
fields micro median_per_s baseline_per_s ratio

run gts "$pk" bench gts --json --devices 4096 --inflight 128 --rounds 1 --seconds 1 \
    --mem-devices 10000
fields gts gts_polls_per_s echo_per_s ratio gts_cpu_us_per_poll echo_cpu_us_per_msg \
    crypto_us_per_exchange index_bytes_per_device journal_records
grep -q '^cryptography per exchange alone' "$work/gts.out" && ok || bad "gts: crypto line"

run sim "$pk" bench sim --devices 400 --json
fields sim events events_per_s failures=0

run reg "$pk" bench reg --devices 64 --inflight 16 --rounds 1 --seconds 0.5 --json
fields reg median_per_s first_per_s kms_cpu_us node_cpu_us

run alloc "$pk" bench alloc --devices 64 --conns 2 --window 16 --rounds 1 --seconds 0.2 --json
fields alloc new_group_per_s new_alone_per_s new_ratio new_group_cpu_us again_group_per_s \
    again_alone_per_s again_ratio

echo "bench smoke: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
