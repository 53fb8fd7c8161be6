#!/bin/sh
# Option-2 allocations through `proxkey kms serve` (in the group commit:
# docs/kms.md), on SQLite or on PostgreSQL (MODE pg, PK_TEST_PG from
# scripts/pg-harness.sh run):
#   1  400 pool pairs, both sides of each asked at once (800 requests); the
#      kms is killed with SIGKILL mid-stream and restarted, twice: once as it
#      runs, once while its commits are slow (a trigger on the log table
#      makes every audit append take a few ms, so the kill lands during a
#      batch). Then two kms processes over the one database, each asked for
#      one side of every pair at once, until every request is answered.
#      Every KSI any answer carried is the pair's stored one with its
#      pool_alloc audit record, both sides of a pair got the same KSI, no
#      pair holds two KSIs and no KSI is held by two pairs, every stored
#      allocation has its audit record, and each answer its own (a pair
#      has a pool_alloc record for its allocation and one per answer).
#   2  with every audit append failing (another trigger), no allocation is
#      answered and none is stored: KMS_ERR(BUSY) instead; with the trigger
#      gone, they are all answered.
#   3  --group-writes off: the same requests, each committed alone (no
#      intent), the same checks.
# The triggers are made while the kms is idle (SQLite: the sqlite3 shell;
# PostgreSQL: psql).
#   alloc.sh PROXKEY TEST_CLIENT [sqlite|pg]
set -u
PK=$1
C=$2
MODE=${3:-sqlite}
D=$(mktemp -d /tmp/pk-alloc-XXXXXX)
PID=
PID2=
fails=0
passes=0
cleanup() {
    for p in $PID $PID2; do
        if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null; fi
    done
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

# start_kms [OPTIONS...]: sets PID and ADDR
start_kms() {
    GEN=$((GEN + 1))
    rm -f "$D/port"
    "$PK" kms serve --db "$DB" --kek "$KEK" --log-level info --listen 127.0.0.1:0 \
        --port-file "$D/port" --ca "$D/ca/ca.crt" --cert "$D/ca/kms.crt" \
        --key "$D/ca/kms.key" "$@" 2>"$D/kms-$GEN.log" &
    PID=$!
    i=0
    while [ ! -s "$D/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    ADDR=127.0.0.1:$(cat "$D/port" 2>/dev/null)
}
stop() { # PID: SIGTERM, bounded wait
    kill -TERM "$1" 2>/dev/null
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    wait "$1"
}
run() { # ADDR PREFIX NPAIRS OUT TRIES [KILL_PID AFTER]: the client's summary on stdout
    a=$1
    shift
    "$C" run "$a" $CA "$@"
}
field() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" "$2" | tail -1; }
reap() { # after a kill: the kms is gone (else stop it: the check failed)
    if kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID"; fi
    wait "$PID" 2>/dev/null
    PID=
}
verify() { # NAME PREFIX NPAIRS FILE...
    n=$1
    shift
    "$C" verify "$DB" "$KEK" "$@" >"$D/verify-$n.txt" 2>&1 || { cat "$D/verify-$n.txt"; false; }
}
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
check "provision $N pool pairs" "'$C' provision '$DB' '$KEK' al $N"

# ---- 1: kill -9 during allocations, twice, then two kms processes at once
start_kms
check "serve listening (group writes)" "grep -q 'group_writes=on' '$D/kms-$GEN.log'"
run "$ADDR" al $N "$D/ksi-1.txt" 50 "$PID" 250 >"$D/run-1.txt"
check "run 1 killed the kms mid-stream" "grep -q 'killed after' '$D/run-1.txt'"
reap
check "run 1 allocated before the kill" "[ \"\$(field answered '$D/run-1.txt')\" -gt 0 ]"
check "run 1: what was answered before the kill is durable and audited" \
    "verify 1 al $N --claim '$D/ksi-1.txt'"
start_kms
check "slow commits" "sql \"\$SLOW\""
run "$ADDR" al $N "$D/ksi-2.txt" 50 "$PID" 500 >"$D/run-2.txt"
check "run 2 killed the kms mid-stream" "grep -q 'killed after' '$D/run-2.txt'"
reap
check "run 2: what was answered before the kill is durable and audited" \
    "verify 2 al $N --claim '$D/ksi-1.txt' '$D/ksi-2.txt'"
check "fast commits" "sql \"\$FAST\""
start_kms
A1=$ADDR
PID1=$PID
start_kms
A2=$ADDR
PID2=$PID
PID=$PID1
run "$A1,$A2" al $N "$D/ksi-3.txt" 50 >"$D/run-3.txt"
check "two kms processes: all $((2 * N)) requests answered" \
    "[ \"\$(field answered '$D/run-3.txt')\" = $((2 * N)) ]"
check "clean stop of both" "stop $PID1 && stop $PID2"
PID=
PID2=
check "answers before and after the kills and of both processes: one KSI per pair, stored, audited" \
    "verify 3 al $N --claim '$D/ksi-1.txt' '$D/ksi-2.txt' '$D/ksi-3.txt'"
check "every pair is allocated" "grep -q 'pairs_allocated=$N ' '$D/verify-3.txt'"
check "both sides of a pair got the same KSI" \
    "[ \"\$(awk '{ p = \$1 < \$2 ? \$1 \" \" \$2 : \$2 \" \" \$1; print p, \$3 }' '$D'/ksi-*.txt |
         sort -u | awk '{ print \$1, \$2 }' | uniq -d | wc -l)\" = 0 ]"
check "allocations were group-committed" "cat '$D'/kms-*.log | grep -q 'intents=[1-9]'"
sed 's/^/  /' "$D/run-1.txt" "$D/verify-1.txt" "$D/run-2.txt" "$D/verify-2.txt" "$D/run-3.txt" \
    "$D/verify-3.txt"

# ---- 2: group commits that fail answer BUSY, never a KSI
M=60
check "provision $M more pairs" "'$C' provision '$DB' '$KEK' ax $M"
start_kms
check "inject: every audit append fails" "sql \"\$FAIL\""
run "$ADDR" ax $M "$D/ksi-f1.txt" 2 >"$D/run-f1.txt"
run "$ADDR" al 20 "$D/ksi-f2.txt" 1 >"$D/run-f2.txt"
check "new allocations while commits fail: none answered" \
    "[ \"\$(field answered '$D/run-f1.txt')\" = 0 ] && [ \"\$(field busy '$D/run-f1.txt')\" -gt 0 ]"
check "allocated pairs while commits fail: none answered" \
    "[ \"\$(field answered '$D/run-f2.txt')\" = 0 ] && [ \"\$(field busy '$D/run-f2.txt')\" -gt 0 ]"
check "nothing allocated while commits fail" "verify f1 ax $M && grep -q 'pairs_allocated=0 ' '$D/verify-f1.txt'"
check "heal" "sql \"\$HEAL\""
run "$ADDR" ax $M "$D/ksi-f3.txt" 50 >"$D/run-f3.txt"
check "after the failures every pair is allocated" \
    "[ \"\$(field answered '$D/run-f3.txt')\" = $((2 * M)) ]"
check "clean stop after failed commits" "stop $PID"
PID=
check "failed commits were logged" "[ \"\$(field commit_failed '$D/kms-$GEN.log')\" -gt 0 ]"
check "the answers after the failures are stored and audited" \
    "verify f3 ax $M --claim '$D/ksi-f1.txt' '$D/ksi-f3.txt' && grep -q 'pairs_allocated=$M ' '$D/verify-f3.txt'"
sed 's/^/  /' "$D/run-f1.txt" "$D/run-f2.txt" "$D/run-f3.txt" "$D/verify-f3.txt"

# ---- 3: without group writes, each allocation commits alone
check "provision $M pairs for the direct path" "'$C' provision '$DB' '$KEK' ad $M"
start_kms --group-writes off
check "serve listening (group writes off)" "grep -q 'group_writes=off' '$D/kms-$GEN.log'"
run "$ADDR" ad $M "$D/ksi-d.txt" 50 >"$D/run-d.txt"
check "direct path: all answered" "[ \"\$(field answered '$D/run-d.txt')\" = $((2 * M)) ]"
check "clean stop (direct)" "stop $PID"
PID=
check "direct path: no intent" "grep -q 'intents=0 ' '$D/kms-$GEN.log'"
check "direct path: stored, audited, one KSI per pair" \
    "verify d ad $M '$D/ksi-d.txt' && grep -q 'pairs_allocated=$M ' '$D/verify-d.txt'"
check "bad --group-writes is a usage error" \
    "'$PK' kms serve --db '$DB' --kek '$KEK' --ca x --cert x --key x --group-writes maybe \
         2>/dev/null; [ \$? = 2 ]"
grep -h "event=stopped" "$D"/kms-*.log | sed 's/^/  /'

echo "$passes passed, $fails failed"
[ $fails = 0 ]
