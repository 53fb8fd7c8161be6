#!/bin/bash
# One gts serves a store (src/gts/gts_owner.c), with real servers:
#   a second `gts serve` on the store is refused, naming the first;
#   kill -9 of the server: a new one takes over at once (same host, the
#   process gone) and answers the device at the identity the journal holds;
#   a server stopped (SIGSTOP) past its lease is taken over, and once it
#   runs again it stops with gts_lease_lost instead of serving; a clean stop
#   releases the store (the next server logs no takeover).
#   owner.sh TRIGGER_GTS [sqlite|pg]   (pg: under scripts/pg-harness.sh run)
set -u
B=$1
BACKEND=${2:-sqlite}
DIR=$(mktemp -d /tmp/proxkey-trigowner-XXXXXX)
ST=(--db "$DIR/gts.db")
if [ "$BACKEND" = pg ]; then
    [ -n "${PK_TEST_PG:-}" ] || { echo "FAIL: pg needs PK_TEST_PG (scripts/pg-harness.sh run)"; exit 1; }
    ST=(--db "$PK_TEST_PG" --kek "$DIR/gts.kek" --journal "$DIR/gts.journal")
fi
OTHER=0
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
trap '[ "$OTHER" != 0 ] && kill -9 "$OTHER" 2>/dev/null; cleanup' EXIT
LEASE=(--lease-s 2)
start() { gts_start "$B" gts serve "${ST[@]}" --listen 127.0.0.1:0 "${LEASE[@]}"; }
poll() { # one exchange with the device, through the server on $PORT
    "$B" device poll --server "127.0.0.1:$PORT" --timeout-ms 300 --max-resend 5 \
        --state "$DIR/dev.state" >"$DIR/poll" 2>&1 || fail "poll: $(cat "$DIR/poll")"
}

"$B" gts device add dev "${ST[@]}" --out "$DIR/dev.state" >/dev/null 2>&1 || fail "device add"
start
A=$SRV
poll
"$B" gts status dev "${ST[@]}" 2>&1 | grep -q "served by gts pid $A " || fail "status: no server shown"

# a second server on the same store: refused at once, naming the first
"$B" gts serve "${ST[@]}" --listen 127.0.0.1:0 "${LEASE[@]}" >/dev/null 2>"$DIR/second.log" &
second=$!
for _ in $(seq 1 50); do kill -0 $second 2>/dev/null || break; sleep 0.1; done
kill -0 $second 2>/dev/null && { kill -9 $second; fail "a second gts serves the store"; }
wait $second
rc=$?
[ $rc = 1 ] || fail "second gts: exit $rc"
grep -q "is served by another gts (pid $A " "$DIR/second.log" ||
    fail "second gts: $(cat "$DIR/second.log")"

# kill -9: taken over at once, and the device (which moved on) is answered
poll
kill -9 "$A"
wait "$A" 2>/dev/null
start
grep -q "event=gts_takeover prev_pid=$A .*reason=gone_from_this_host" "$DIR/gts.log" ||
    fail "no takeover after kill -9"
poll

# stopped past its lease: taken over; when it runs again it stops unheard
kill -STOP "$SRV"
OTHER=$SRV
cp "$DIR/gts.log" "$DIR/stopped.log"
sleep 2.5
start
grep -q "event=gts_takeover prev_pid=$OTHER .*reason=lease_over" "$DIR/gts.log" ||
    fail "no takeover of a stopped server"
poll
kill -CONT "$OTHER"
for _ in $(seq 1 50); do kill -0 "$OTHER" 2>/dev/null || break; sleep 0.1; done
kill -0 "$OTHER" 2>/dev/null && fail "the stopped server runs on after losing its lease"
wait "$OTHER"
rc=$?
OTHER=0
[ $rc = 1 ] || fail "the stopped server: exit $rc"
poll

# a clean stop releases the store: no takeover next time
kill -TERM "$SRV"
wait "$SRV"
rc=$?
SRV=0
[ $rc = 0 ] || fail "clean stop: exit $rc"
"$B" gts status dev "${ST[@]}" 2>&1 | grep -q "no gts serves the store now" ||
    fail "status after a clean stop: $("$B" gts status dev "${ST[@]}" 2>&1)"
start
grep -q "gts_takeover" "$DIR/gts.log" && fail "takeover after a clean stop"
poll
echo "ok ($BACKEND): one gts per store: a second refused, kill -9 and a stopped server taken over, clean stop released"
