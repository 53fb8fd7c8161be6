#!/bin/sh
# First registrations through `proxkey kms serve` (their root keys and
# directory entries go into the group commit, docs/kms.md), on SQLite or on
# PostgreSQL (MODE pg, PK_TEST_PG from scripts/pg-harness.sh run):
#   1  400 pairs register (a sides, then b sides, 96 in flight); the kms is
#      killed with SIGKILL mid-stream and restarted, twice: once as it runs,
#      once while its commits are slow (a trigger on the log table makes
#      every audit append take a few ms, so the kill lands during a batch);
#      then every device registers. Every key any answer carried is the
#      pair's stored root key with its KSI and has its root_key audit record,
#      both devices of a pair hold the same key, no KSI is stored for two
#      pairs, and no device is locked out (all 800 answered at the end).
#   2  with every audit append failing (another trigger), no answer carries
#      a key - neither first registrations nor re-registrations:
#      KMS_ERR(BUSY) instead; with the trigger gone, they all register.
# The triggers are made while the kms is idle (SQLite: the sqlite3 shell;
# PostgreSQL: psql).
#   firstreg.sh PROXKEY TEST_CLIENT [sqlite|pg]
set -u
PK=$1
C=$2
MODE=${3:-sqlite}
D=$(mktemp -d /tmp/pk-firstreg-XXXXXX)
PID=
fails=0
passes=0
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null; fi
    [ -n "${KEEP:-}" ] || rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

if [ "$MODE" = pg ]; then
    DB=${PK_TEST_PG:?PK_TEST_PG is not set: run under scripts/pg-harness.sh run}
else
    DB=$D/kms.db
fi
KEK=$D/kms.kek
CA="$D/ca/ca.crt $D/ca/node-1.crt $D/ca/node-1.key"
N=400
GEN=0

start_kms() {
    GEN=$((GEN + 1))
    rm -f "$D/port"
    "$PK" kms serve --db "$DB" --kek "$KEK" --log-level info --listen 127.0.0.1:0 \
        --port-file "$D/port" --ca "$D/ca/ca.crt" --cert "$D/ca/kms.crt" \
        --key "$D/ca/kms.key" 2>"$D/kms-$GEN.log" &
    PID=$!
    i=0
    while [ ! -s "$D/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    ADDR=127.0.0.1:$(cat "$D/port" 2>/dev/null)
}
stop_kms() { # SIGTERM, bounded wait
    kill -TERM "$PID" 2>/dev/null
    i=0
    while kill -0 "$PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    wait "$PID"
    rc=$?
    PID=
    return $rc
}
run() { # PREFIX NPAIRS OUT TRIES [AFTER]: the client's summary line on stdout
    if [ $# -eq 5 ]; then
        "$C" run "$ADDR" $CA node-1 "$1" "$2" "$3" "$4" "$PID" "$5"
    else
        "$C" run "$ADDR" $CA node-1 "$1" "$2" "$3" "$4"
    fi
}
field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" "$2" | tail -1; }
reap() { # after a kill: the kms is gone (else stop it: the check failed)
    if kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID"; fi
    wait "$PID" 2>/dev/null
    PID=
}
# sql STATEMENTS: on the test's database, waiting for the kms's write lock
if [ "$MODE" = pg ]; then
    sql() { psql -q -v ON_ERROR_STOP=1 "$DB" -c "$1" >/dev/null; }
    SLOW="CREATE FUNCTION pk_test_slow() RETURNS trigger LANGUAGE plpgsql AS
          \$\$ BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END \$\$;
          CREATE TRIGGER pk_test_slow BEFORE INSERT ON pk_log FOR EACH ROW
          EXECUTE FUNCTION pk_test_slow();"
    FAST="DROP TRIGGER pk_test_slow ON pk_log"
    FAIL="CREATE FUNCTION pk_test_fail() RETURNS trigger LANGUAGE plpgsql AS
          \$\$ BEGIN RAISE EXCEPTION 'injected'; END \$\$;
          CREATE TRIGGER pk_test_fail BEFORE INSERT ON pk_log FOR EACH ROW
          EXECUTE FUNCTION pk_test_fail();"
    HEAL="DROP TRIGGER pk_test_fail ON pk_log"
else
    sql() { sqlite3 -bail -cmd ".timeout 10000" "$DB" "$1"; }
    SLOW="CREATE TRIGGER pk_test_slow BEFORE INSERT ON pk_log
          BEGIN SELECT length(hex(randomblob(300000))); END;"
    FAST="DROP TRIGGER pk_test_slow;"
    FAIL="CREATE TRIGGER pk_test_fail BEFORE INSERT ON pk_log
          BEGIN SELECT RAISE(ABORT, 'injected'); END;"
    HEAL="DROP TRIGGER pk_test_fail;"
fi

check "ca" "'$PK' ca init '$D/ca' >/dev/null && '$PK' ca issue '$D/ca' kms >/dev/null &&
            '$PK' ca issue '$D/ca' node-1 >/dev/null"
check "kms init" "'$PK' kms init --db '$DB' --kek '$KEK' --log-level warn >/dev/null"
check "provision $N pairs" "'$C' provision '$DB' '$KEK' fr $N"

# ---- 1: kill -9 during first registrations, twice, then everyone
start_kms
check "serve listening" "[ -s '$D/port' ]"
run fr $N "$D/keys-1.txt" 50 250 >"$D/run-1.txt"
check "run 1 killed the kms mid-stream" "grep -q 'killed after' '$D/run-1.txt'"
reap
check "run 1 got keys before the kill" "[ \"\$(field keys '$D/run-1.txt')\" -gt 0 ]"
# before any restart: the answers' own records, not later ones, must be there
verify() { # NAME FILE...
    n=$1
    shift
    "$C" verify "$DB" "$KEK" fr $N "$@" >"$D/verify-$n.txt" 2>&1 || { cat "$D/verify-$n.txt"; false; }
}
check "run 1: what was answered before the kill is durable" "verify 1 '$D/keys-1.txt'"
start_kms
check "slow commits" "sql \"\$SLOW\""
run fr $N "$D/keys-2.txt" 50 550 >"$D/run-2.txt"
check "run 2 killed the kms mid-stream" "grep -q 'killed after' '$D/run-2.txt'"
reap
check "run 2: what was answered before the kill is durable" "verify 2 '$D/keys-2.txt'"
check "fast commits" "sql \"\$FAST\""
start_kms
run fr $N "$D/keys-3.txt" 50 >"$D/run-3.txt"
check "no device locked out: all $((2 * N)) answered with their key" \
    "[ \"\$(field answered '$D/run-3.txt')\" = $((2 * N)) ] && [ \"\$(field keys '$D/run-3.txt')\" = $((2 * N)) ]"
check "clean stop" "stop_kms"
check "the answers before and after the kills are the stored keys, audited, KSIs unique" \
    "verify 3 '$D/keys-1.txt' '$D/keys-2.txt' '$D/keys-3.txt'"
check "every pair has its key" "grep -q 'pairs_with_keys=$N ' '$D/verify-3.txt'"
check "first registrations were group-committed" \
    "[ \"\$(field intents '$D/kms-3.log')\" -gt 0 ] || grep -q 'intents=[1-9]' '$D/kms-1.log' '$D/kms-2.log'"
sed 's/^/  /' "$D/run-1.txt" "$D/verify-1.txt" "$D/run-2.txt" "$D/verify-2.txt" "$D/run-3.txt" \
    "$D/verify-3.txt"

# ---- 2: group commits that fail answer BUSY, never keys
M=60
check "provision $M more pairs" "'$C' provision '$DB' '$KEK' fx $M"
start_kms
check "inject: every audit append fails" "sql \"\$FAIL\""
run fx $M "$D/keys-f1.txt" 2 >"$D/run-f1.txt"
run fr 20 "$D/keys-f2.txt" 1 >"$D/run-f2.txt"
check "first registrations while commits fail: no key answered" \
    "[ \"\$(field keys '$D/run-f1.txt')\" = 0 ] && [ \"\$(field busy '$D/run-f1.txt')\" -gt 0 ]"
check "re-registrations while commits fail: no key answered" \
    "[ \"\$(field keys '$D/run-f2.txt')\" = 0 ] && [ \"\$(field busy '$D/run-f2.txt')\" -gt 0 ]"
check "heal" "sql \"\$HEAL\""
run fx $M "$D/keys-f3.txt" 50 >"$D/run-f3.txt"
check "after the failures every device registers" \
    "[ \"\$(field keys '$D/run-f3.txt')\" = $((2 * M)) ]"
check "clean stop after failed commits" "stop_kms"
check "failed commits were logged" "[ \"\$(field commit_failed '$D/kms-$GEN.log')\" -gt 0 ]"
check "the answers after the failures are the stored keys, audited" \
    "'$C' verify '$DB' '$KEK' fx $M '$D/keys-f1.txt' '$D/keys-f3.txt' >'$D/verify-2.txt' 2>&1 ||
     { cat '$D/verify-2.txt'; false; }"
sed 's/^/  /' "$D/run-f1.txt" "$D/run-f2.txt" "$D/run-f3.txt" "$D/verify-2.txt"
grep -h "event=stopped" "$D"/kms-*.log | sed 's/^/  /'

echo "$passes passed, $fails failed"
[ $fails = 0 ]
