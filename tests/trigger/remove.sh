#!/bin/bash
# gts device remove, against a running server and across a crash:
#   three devices provisioned (one with --interval) and polled, each left
#   with an exchange pending, one with a queued command; `gts device remove`
#   of an unknown name alongside a real one refuses and removes nothing;
#   then two are removed while the server runs: their next polls (with the
#   UID2 they moved to) get no answer, `gts status` and `gts device list` no
#   longer know them, the third device still gets answers and its command.
#   kill -9 before any checkpoint (the journal still holds the removed
#   devices' entries), then a restart: they stay removed, the third device
#   still works. The name is provisioned again: new dev_no, new key and
#   identity, answered; the old state line is not. On the way, `gts status`
#   shows the poll interval: none, then as provisioned (--interval), then
#   the one a delivered poll-slower set, read from the journal while the
#   server runs and from the store once recovery folded it.
#   remove.sh TRIGGER_GTS [sqlite|pg]   (pg: under scripts/pg-harness.sh run,
#   the store in its private PostgreSQL, the journal a local file)
set -u
B=$1
BACKEND=${2:-sqlite}
DIR=$(mktemp -d /tmp/proxkey-trigremove-XXXXXX)
JNL=$DIR/gts.db.journal
ST=(--db "$DIR/gts.db")
if [ "$BACKEND" = pg ]; then
    [ -n "${PK_TEST_PG:-}" ] || { echo "FAIL: pg needs PK_TEST_PG (scripts/pg-harness.sh run)"; exit 1; }
    JNL=$DIR/gts.journal
    ST=(--db "$PK_TEST_PG" --kek "$DIR/gts.kek" --journal "$JNL")
fi
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
start() { gts_start "$B" gts serve "${ST[@]}" --listen 127.0.0.1:0; }
poll() { # poll NAME: one exchange, the answer in $DIR/poll
    "$B" device poll --server "127.0.0.1:$PORT" --timeout-ms 300 --max-resend 3 \
        --state "$DIR/$1.state" >"$DIR/poll" 2>&1
}
silent() { # silent STATEFILE: no answer within 2 x 150 ms
    "$B" device poll --server "127.0.0.1:$PORT" --timeout-ms 150 --max-resend 1 \
        --state "$1" >/dev/null 2>&1 && return 1
    return 0
}

for d in rm-a rm-b keep; do
    extra=()
    [ "$d" = keep ] && extra=(--interval 30)
    "$B" gts device add "$d" "${ST[@]}" "${extra[@]}" --out "$DIR/$d.state" >"$DIR/add.log" 2>&1 ||
        fail "add $d: $(cat "$DIR/add.log")"
done
grep -Eqx "keep [0-9]+ [0-9a-f]{32} [0-9a-f]{32} 30" "$DIR/keep.state" || fail "keep.state: no interval"
"$B" gts device add bad "${ST[@]}" --interval 0 >/dev/null 2>&1 && fail "--interval 0 accepted"
"$B" gts status rm-b "${ST[@]}" >"$DIR/st" 2>&1 || fail "status rm-b"
grep -q "poll interval: the device's own" "$DIR/st" || fail "rm-b interval: $(cat "$DIR/st")"
start
for d in rm-a rm-b keep; do
    poll "$d" || fail "$d: first poll: $(cat "$DIR/poll")"
    cp "$DIR/$d.state" "$DIR/$d.uid2" # the device now polls with UID2
done
"$B" gts send rm-a app for-a "${ST[@]}" >/dev/null 2>&1 || fail "send rm-a"
"$B" gts send keep app for-keep "${ST[@]}" >/dev/null 2>&1 || fail "send keep"
sleep 0.5

# all or none
"$B" gts device remove rm-a nosuch "${ST[@]}" >"$DIR/out" 2>"$DIR/err" &&
    fail "remove with an unknown name succeeded"
grep -q "nosuch: no such device (nothing removed)" "$DIR/err" || fail "message: $(cat "$DIR/err")"
"$B" gts status rm-a "${ST[@]}" >/dev/null 2>&1 || fail "rm-a vanished after a refused remove"
"$B" gts device remove "${ST[@]}" >/dev/null 2>&1 && fail "remove without a name succeeded"

"$B" gts device remove rm-a rm-b "${ST[@]}" >"$DIR/out" 2>"$DIR/err" || fail "remove: $(cat "$DIR/err")"
grep -Eq "^removed rm-a \(dev_no [0-9]+\)$" "$DIR/out" || fail "remove output: $(cat "$DIR/out")"
sleep 0.5 # the server looks at its inbox every 200 ms
grep -q "event=gts_device_removed" "$DIR/gts.log" || fail "the server did not drop the devices"
for d in rm-a rm-b; do
    silent "$DIR/$d.uid2" || fail "$d: removed, yet its UID2 is answered"
    "$B" gts status "$d" "${ST[@]}" >/dev/null 2>&1 && fail "$d: status still known"
done
"$B" gts device list "${ST[@]}" >"$DIR/list" 2>&1 || fail "list"
grep -q "^rm-" "$DIR/list" && fail "list still shows a removed device: $(cat "$DIR/list")"
poll keep || fail "keep: poll after the removal: $(cat "$DIR/poll")"
grep -q "^keep: app for-keep" "$DIR/poll" || fail "keep: command: $(cat "$DIR/poll")"
# the poll interval the server knows: as provisioned, until a poll-slower is delivered
"$B" gts status keep "${ST[@]}" >"$DIR/st" 2>&1 || fail "status keep"
grep -q "poll interval 30s (as provisioned)" "$DIR/st" || fail "interval before: $(cat "$DIR/st")"
"$B" gts send keep poll-slower 120 "${ST[@]}" >/dev/null 2>&1 || fail "send poll-slower"
sleep 0.5
poll keep || fail "keep: poll for poll-slower: $(cat "$DIR/poll")"
grep -q "^keep: poll-slower" "$DIR/poll" || fail "keep: poll-slower: $(cat "$DIR/poll")"
poll keep || fail "keep: poll after poll-slower" # its UID2: the command is delivered
"$B" gts status keep "${ST[@]}" >"$DIR/st" 2>&1 || fail "status keep"
grep -Eq "poll interval 120s \(set by command seq=[0-9]+\)" "$DIR/st" ||
    fail "interval from the journal: $(cat "$DIR/st")"

# a crash before any checkpoint: the journal holds rm-a's and rm-b's entries
kill -9 "$SRV"
wait "$SRV" 2>/dev/null
SRV=0
ls "$JNL".* >/dev/null 2>&1 || fail "no journal file to replay"
start
for d in rm-a rm-b; do
    silent "$DIR/$d.uid2" || fail "$d: answered again after the restart"
done
"$B" gts device list "${ST[@]}" >"$DIR/list" 2>&1 || fail "list after restart"
grep -q "^rm-" "$DIR/list" && fail "a removed device came back: $(cat "$DIR/list")"
"$B" gts status keep "${ST[@]}" >"$DIR/st" 2>&1 || fail "status keep after restart"
grep -Eq "poll interval 120s \(set by command seq=[0-9]+\)" "$DIR/st" ||
    fail "interval after recovery: $(cat "$DIR/st")"
poll keep || fail "keep: poll after the restart: $(cat "$DIR/poll")"

# the name again: a new device
"$B" gts device add rm-a "${ST[@]}" --out "$DIR/rm-a.new" >/dev/null 2>&1 || fail "re-add rm-a"
old=$(cut -d' ' -f2 "$DIR/rm-a.state")
new=$(cut -d' ' -f2 "$DIR/rm-a.new")
[ "$old" != "$new" ] || fail "rm-a got its old dev_no $old back"
sleep 0.5
cp "$DIR/rm-a.new" "$DIR/rm-a.state"
poll rm-a || fail "rm-a (new): poll: $(cat "$DIR/poll")"
silent "$DIR/rm-a.uid2" || fail "rm-a: the old identity is answered"
kill -TERM "$SRV"
wait "$SRV" 2>/dev/null
SRV=0
echo "ok ($BACKEND): removal all-or-none, immediate on a running server, kept across kill -9 and journal replay"
