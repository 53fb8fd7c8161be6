#!/bin/bash
# kill -9 of the gts at random moments while devices poll it; after each
# restart no device may be locked out and no command lost or repeated.
#   kill9.sh TRIGGER_GTS TRIGGER_LOAD
set -u
GTS=$1
LOAD=$2
N=${TRIGGER_KILL9_DEVICES:-200}
KILLS=${TRIGGER_KILL9_KILLS:-6}
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
    "$GTS" gts serve --store "$STORE" --listen 127.0.0.1:$PORT --quiet 2>>"$DIR/gts.log" &
    SRV=$!
    sleep 0.3
    kill -0 "$SRV" 2>/dev/null || { cat "$DIR/gts.log"; fail "gts did not start"; }
}

"$GTS" gts device add dev --count "$N" --out "$DIR/prov" --store "$STORE" || fail "device add"
"$GTS" gts send --all app c1 --store "$STORE" >/dev/null || fail "send c1"
"$GTS" gts send --all app c2 --store "$STORE" >/dev/null || fail "send c2"
start
"$LOAD" "$DIR/prov" "$PORT" 3 120 >"$DIR/load.log" 2>&1 &
LG=$!
for k in $(seq 1 "$KILLS"); do
    # a random moment: 0.2 .. 1.7 s of running
    sleep "0.$((2 + RANDOM % 8))$((RANDOM % 10))"
    [ $((RANDOM % 2)) = 0 ] && sleep 0.$((RANDOM % 10))
    kill -9 "$SRV" 2>/dev/null
    wait "$SRV" 2>/dev/null
    echo "kill -9 #$k"
    if [ "$k" = 2 ]; then
        # a command queued while the server is down
        "$GTS" gts send --all app c3 --store "$STORE" >/dev/null || fail "send c3"
    fi
    sleep 0.$((RANDOM % 5))
    start
done
wait "$LG"
RC=$?
LG=0
cat "$DIR/load.log" | tail -3
[ "$RC" = 0 ] || { tail -20 "$DIR/gts.log"; fail "devices locked out or commands lost/repeated"; }
sleep 0.5
# every queue is empty: each command was counted delivered exactly once
"$GTS" gts device list --store "$STORE" >"$DIR/list" || fail "device list"
grep -c 'queued=0' "$DIR/list" | grep -qx "$N" || { grep -v 'queued=0' "$DIR/list" | head; fail "queues not empty"; }
echo "ok: $N devices, $KILLS kill -9, all commands delivered exactly once, no lockout"
