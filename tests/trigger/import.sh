#!/bin/bash
# Trigger devices provisioned from the kms store:
#   kms init; kms device add --trigger for three devices (state lines 0600);
#   gts serve on 127.0.0.1 (ephemeral port) on an empty store; gts device
#   import --all while it runs (it loads them from gts_newdev); every device
#   polls with the state line the kms gave it and gets answers; a queued
#   command is delivered; a device that has rotated past UID1 survives a
#   re-import (its current state still polls, its old kms line gets no
#   answer: UID1 was not reset); unknown IDs and devices without a trigger
#   key are refused and import nothing; the kms audit shows trigger_key
#   issuance (made, exported to the gts once) without key bytes; the kms
#   SQLite files hold no K1 or UID1 in the clear.
#   import.sh TRIGGER_KMSGTS
set -u
B=$1
DIR=$(mktemp -d /tmp/proxkey-trigimport-XXXXXX)
KMS=$DIR/kms.db
KEK=$DIR/kms.kek
GTS=$DIR/gts.db
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
K=(--db "$KMS" --kek "$KEK")
DEVS="tr-a tr-b tr-c"

"$B" kms init "${K[@]}" >/dev/null 2>&1 || fail "kms init"
for d in $DEVS; do
    extra=""
    [ "$d" = tr-c ] && extra="--trigger-rotate"
    # shellcheck disable=SC2086
    "$B" kms device add "$d" "${K[@]}" --trigger --trigger-out "$DIR/$d.state" $extra \
        >/dev/null 2>>"$DIR/kms.log" || fail "kms device add $d --trigger"
    [ "$(stat -c %a "$DIR/$d.state")" = 600 ] || fail "$d.state is not mode 0600"
    grep -Eqx "$d 0 [0-9a-f]{32} [0-9a-f]{32}" "$DIR/$d.state" || fail "$d.state: bad line"
    cp "$DIR/$d.state" "$DIR/$d.kms" # the line as the kms issued it
done
"$B" kms device add plain "${K[@]}" >/dev/null 2>&1 || fail "kms device add plain"
"$B" kms trigger list "${K[@]}" 2>/dev/null | grep -qx "3 trigger device(s)" || fail "trigger list"
# printed once on stdout when no --out: the same line format
"$B" kms device add tr-p "${K[@]}" >/dev/null 2>&1 || fail "kms device add tr-p"
"$B" kms trigger add tr-p "${K[@]}" 2>/dev/null >"$DIR/tr-p.line" || fail "kms trigger add"
grep -Eqx "tr-p 0 [0-9a-f]{32} [0-9a-f]{32}" "$DIR/tr-p.line" || fail "trigger add output"
"$B" kms trigger add tr-p "${K[@]}" >/dev/null 2>&1 && fail "a second trigger key for tr-p"
"$B" kms trigger remove tr-p "${K[@]}" >/dev/null 2>&1 || fail "kms trigger remove"

IMP=(gts device import --kms-db "$KMS" --kms-kek "$KEK" --db "$GTS")
# unknown IDs and devices without a trigger key: an error, nothing imported
"$B" "${IMP[@]}" tr-a nosuch >"$DIR/out" 2>"$DIR/err" && fail "import of an unknown ID succeeded"
grep -q "nosuch: no such device in the kms" "$DIR/err" || fail "unknown ID message: $(cat "$DIR/err")"
"$B" "${IMP[@]}" plain >"$DIR/out" 2>"$DIR/err" && fail "import of a device without trigger key"
grep -q "plain: the kms device has no trigger key" "$DIR/err" || fail "no-trigger message"
"$B" "${IMP[@]}" tr-p >/dev/null 2>&1 && fail "import of a removed trigger key"
[ -e "$GTS" ] && fail "a refused import touched the gts store"

# the server first, on an empty store; the import reaches it through the store
gts_start "$B" gts serve --db "$GTS" --listen 127.0.0.1:0

"$B" "${IMP[@]}" --all --interval 0 >/dev/null 2>"$DIR/err"
[ $? = 2 ] || fail "--interval 0 is not a usage error"
grep -q "interval wants seconds" "$DIR/err" || fail "--interval 0 message: $(cat "$DIR/err")"
"$B" "${IMP[@]}" --all --interval 300 >"$DIR/imp1" 2>>"$DIR/kms.log" || fail "import --all"
grep -qx "3 imported, 0 kept" "$DIR/imp1" || fail "first import: $(cat "$DIR/imp1")"
"$B" gts status tr-a --db "$GTS" >"$DIR/st" 2>&1 || fail "status after import"
grep -q "poll interval 300s (as provisioned)" "$DIR/st" || fail "imported interval: $(cat "$DIR/st")"
sleep 0.5 # the server looks at gts_newdev every 200 ms

POLL=(device poll --server "127.0.0.1:$PORT" --timeout-ms 400 --max-resend 5)
for d in $DEVS; do
    "$B" "${POLL[@]}" --state "$DIR/$d.state" >"$DIR/poll" 2>&1 || fail "$d: first poll"
    grep -q "^$d: none" "$DIR/poll" || fail "$d: first answer: $(cat "$DIR/poll")"
done
grep -q " rotate" <("$B" gts device list --db "$GTS" 2>/dev/null | grep tr-c) ||
    fail "tr-c lost its rotation flag"

# the state file holds K1: one readable by others, or not a state line, is
# refused with a clear message (and nothing is sent)
cp "$DIR/tr-a.state" "$DIR/open.state" && chmod 644 "$DIR/open.state"
"$B" "${POLL[@]}" --state "$DIR/open.state" >/dev/null 2>"$DIR/err" && fail "a 0644 state file was used"
grep -q "open.state: readable by others; it holds the device's key (chmod 600" "$DIR/err" ||
    fail "0644 message: $(cat "$DIR/err")"
printf 'tr-a 0 zz\n' >"$DIR/bad.state" && chmod 600 "$DIR/bad.state"
"$B" "${POLL[@]}" --state "$DIR/bad.state" >/dev/null 2>"$DIR/err" && fail "a malformed state file was used"
grep -q "bad.state: not a trigger state line: the third field must be K1, 32 hex digits" "$DIR/err" ||
    fail "malformed message: $(cat "$DIR/err")"
"$B" "${POLL[@]}" --state "$DIR/none.state" >/dev/null 2>"$DIR/err" && fail "a missing state file"
grep -q "cannot read .*none.state: no such file" "$DIR/err" || fail "missing message: $(cat "$DIR/err")"

# a queued command is delivered
"$B" gts send tr-b app hello-from-gts --db "$GTS" >/dev/null 2>&1 || fail "send"
sleep 0.5
"$B" "${POLL[@]}" --state "$DIR/tr-b.state" >"$DIR/poll" 2>&1 || fail "tr-b: poll for the command"
grep -q "^tr-b: app hello-from-gts" "$DIR/poll" || fail "command not delivered: $(cat "$DIR/poll")"
# a binary payload: queued as hex, shown as hex in the queue and at the device
"$B" gts send tr-b app --hex 00ff41 --db "$GTS" >/dev/null 2>&1 || fail "send --hex"
"$B" gts status tr-b --db "$GTS" 2>/dev/null | grep -q "queued seq=[0-9]* app 0x00ff41$" ||
    fail "status does not show the binary payload in hex"
sleep 0.5
"$B" "${POLL[@]}" --state "$DIR/tr-b.state" >"$DIR/poll" 2>&1 || fail "tr-b: poll for the binary payload"
grep -q "^tr-b: app 0x00ff41 " "$DIR/poll" || fail "binary payload: $(cat "$DIR/poll")"

# tr-a and tr-c rotate past UID1 (a second exchange retires it)
for d in tr-a tr-c; do
    "$B" "${POLL[@]}" --state "$DIR/$d.state" >"$DIR/poll" 2>&1 || fail "$d: second poll"
    cmp -s "$DIR/$d.state" "$DIR/$d.kms" && fail "$d: identity did not change"
done
# re-import: everything kept, no key exported again, identity state untouched
"$B" "${IMP[@]}" --all >"$DIR/imp2" 2>>"$DIR/kms.log" || fail "re-import --all"
grep -qx "0 imported, 3 kept" "$DIR/imp2" || fail "re-import: $(cat "$DIR/imp2")"
"$B" "${IMP[@]}" tr-a --interval 20 >"$DIR/imp3" 2>>"$DIR/kms.log" || fail "re-import tr-a"
grep -q "^kept tr-a" "$DIR/imp3" || fail "re-import tr-a: $(cat "$DIR/imp3")"
"$B" gts status tr-a --db "$GTS" >"$DIR/st" 2>&1 || fail "status after re-import"
grep -q "poll interval 300s (as provisioned)" "$DIR/st" || fail "re-import changed the interval"
sleep 0.5
for d in tr-a tr-c; do
    "$B" "${POLL[@]}" --state "$DIR/$d.state" >"$DIR/poll" 2>&1 ||
        fail "$d: no answer after re-import ($(cat "$DIR/poll"))"
    grep -q "^$d: none" "$DIR/poll" || fail "$d: answer after re-import: $(cat "$DIR/poll")"
    # the kms's original UID1 must be dead: re-import did not reset the device
    cp "$DIR/$d.kms" "$DIR/$d.old"
    "$B" device poll --server "127.0.0.1:$PORT" --timeout-ms 150 --max-resend 1 \
        --state "$DIR/$d.old" >/dev/null 2>&1 && fail "$d: the old UID1 is answered again"
done
"$B" "${POLL[@]}" --state "$DIR/tr-b.state" >/dev/null 2>&1 || fail "tr-b: poll after re-import"
# the device's state may live in its state directory: --dir DIR is DIR/trigger
mkdir -m 700 "$DIR/tr-b.dir" && cp "$DIR/tr-b.state" "$DIR/tr-b.dir/trigger" || fail "tr-b: state dir"
"$B" "${POLL[@]}" --dir "$DIR/tr-b.dir" >"$DIR/poll" 2>&1 || fail "tr-b: poll --dir: $(cat "$DIR/poll")"
cmp -s "$DIR/tr-b.state" "$DIR/tr-b.dir/trigger" && fail "tr-b: poll --dir did not store the next identity"

kill -TERM "$SRV"
wait "$SRV" 2>/dev/null
SRV=0

# audit: made (node admin) and exported to the gts once per device; no key bytes
"$B" kms audit "${K[@]}" >"$DIR/audit" 2>/dev/null || fail "kms audit"
for d in $DEVS; do
    grep -q "what=trigger_key node=admin device=$d\$" "$DIR/audit" || fail "$d: no trigger_key/admin"
    [ "$(grep -c "what=trigger_key node=gts device=$d\$" "$DIR/audit")" = 1 ] ||
        fail "$d: trigger_key to gts not exactly once"
done
grep -q "what=trigger_remove node=admin device=tr-p" "$DIR/audit" || fail "no trigger_remove"
python3 - "$DIR" $DEVS tr-p <<'EOF' || fail "key material found in the clear"
import glob, sys
d = sys.argv[1]
files = glob.glob(d + "/kms.db*") + [d + "/audit", d + "/kms.log"]
blobs = {f: open(f, "rb").read() for f in files}
bad = 0
for dev in sys.argv[2:]:
    src = d + "/" + dev + (".line" if dev == "tr-p" else ".kms")
    name, _, k1, uid1 = open(src).read().split()
    for secret in (k1, uid1):
        for form in (bytes.fromhex(secret), secret.encode(), secret.upper().encode()):
            for f, b in blobs.items():
                if form in b:
                    print("%s: %s of %s in the clear" % (f, secret, dev))
                    bad = 1
sys.exit(bad)
EOF
echo "ok: 3 devices made in the kms, imported with their interval, polled; command delivered; re-import kept rotated state and interval"
