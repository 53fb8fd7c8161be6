#!/bin/bash
# kill -9 of the gts at random moments while devices poll it and commands
# c1..c6 are queued (four of them while it is down); after each
# restart no device may be locked out and no command lost or repeated.
#   kill9.sh TRIGGER_GTS TRIGGER_LOAD
# Every other start checkpoints constantly (every 40 ms or 200 records), so
# kills also land inside checkpoints and journal rotations; some kills are
# followed by a torn tail (random bytes appended to the newest journal file,
# as a crash in the middle of a group write leaves it). At the end: a last
# kill -9, the device list read offline (store + journal) must show every
# queue empty; a clean restart and SIGTERM must fold the journal away and
# show the same.
set -u
GTS=$1
LOAD=$2
N=${TRIGGER_KILL9_DEVICES:-200}
KILLS=${TRIGGER_KILL9_KILLS:-14}
DIR=$(mktemp -d /tmp/proxkey-kill9-XXXXXX)
STORE=$DIR/gts.db
PORT=$((20000 + RANDOM % 20000))
SRV=0
LG=0
cleanup() {
    [ "$SRV" != 0 ] && kill -9 "$SRV" 2>/dev/null
    [ "$LG" != 0 ] && kill -9 "$LG" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

start() {
    local extra=""
    [ $(($1 % 2)) = 1 ] && extra="--checkpoint-ms 40 --checkpoint-records 200"
    # --no-retx-limit: one load generator's address stands for 10,000
    # devices retransmitting through 30 % loss (the per-address limit would
    # rightly throttle it)
    # shellcheck disable=SC2086
    "$GTS" gts serve --store "$STORE" --listen 127.0.0.1:$PORT --quiet --no-retx-limit $extra \
        2>>"$DIR/gts.log" &
    SRV=$!
    sleep 0.3
    kill -0 "$SRV" 2>/dev/null || { tail -5 "$DIR/gts.log"; fail "gts did not start"; }
}

check_lists() { # every queue empty, per the offline view (store + journal)
    "$GTS" gts device list --store "$STORE" >"$DIR/list" || fail "device list"
    grep -c 'queued=0' "$DIR/list" | grep -qx "$N" || {
        grep -v 'queued=0' "$DIR/list" | head
        fail "queues not empty ($1)"
    }
}

"$GTS" gts device add dev --count "$N" --out "$DIR/prov" --store "$STORE" || fail "device add"
"$GTS" gts send --all app c1 --store "$STORE" >/dev/null || fail "send c1"
"$GTS" gts send --all app c2 --store "$STORE" >/dev/null || fail "send c2"
start 0
"$LOAD" "$DIR/prov" "$PORT" 6 120 >"$DIR/load.log" 2>&1 &
LG=$!
TORN=0
for k in $(seq 1 "$KILLS"); do
    # a random moment: 0.1 .. 0.7 s of running
    sleep "0.$((1 + RANDOM % 6))$((RANDOM % 10))"
    kill -9 "$SRV" 2>/dev/null
    wait "$SRV" 2>/dev/null
    echo "kill -9 #$k"
    case "$k" in # commands queued while the server is down: c3 .. c6
    2 | 5 | 8 | 11)
        C=$((3 + (k - 2) / 3))
        "$GTS" gts send --all app "c$C" --store "$STORE" >/dev/null || fail "send c$C"
        ;;
    esac
    if [ $((k % 3)) = 0 ]; then
        # a torn tail: part of a record that never became durable
        J=$(ls "$STORE".journal.* 2>/dev/null | sort | tail -1)
        if [ -n "$J" ]; then
            head -c $((1 + RANDOM % 119)) /dev/urandom >>"$J"
            TORN=$((TORN + 1))
        fi
    fi
    sleep 0.$((RANDOM % 3))
    start "$k"
done
wait "$LG"
RC=$?
LG=0
tail -3 "$DIR/load.log"
[ "$RC" = 0 ] || { tail -20 "$DIR/gts.log"; fail "devices locked out or commands lost/repeated"; }
sleep 0.3
# a last kill -9: the offline view must already show every command delivered
kill -9 "$SRV" 2>/dev/null
wait "$SRV" 2>/dev/null
SRV=0
check_lists "after kill -9, store + journal"
# a clean start folds the journal in; SIGTERM checkpoints and stops
start 0
kill -TERM "$SRV"
wait "$SRV"
RC=$?
SRV=0
[ "$RC" = 0 ] || fail "gts exited $RC on SIGTERM"
check_lists "after recovery and clean stop"
NJ=$(ls "$STORE".journal.* 2>/dev/null | wc -l)
[ "$NJ" -le 1 ] || fail "$NJ journal files left after a clean stop"
grep -q "gts_recovered" "$DIR/gts.log" || fail "no recovery from the journal was ever logged"
echo "ok: $N devices, $KILLS kill -9 ($TORN torn tails), all commands delivered exactly once, no lockout"
