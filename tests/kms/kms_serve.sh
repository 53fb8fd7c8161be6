#!/bin/sh
# Integration: a dev CA from `proxkey ca`, `proxkey kms init`, devices and a
# pair from the admin CLI, `proxkey kms serve` on 127.0.0.1 (ephemeral port),
# a node-side client over mutual TLS, the audit log, a clean SIGTERM stop.
#   kms_serve.sh PROXKEY TEST_CLIENT
set -u
PK=$1
CLIENT=$2
D=$(mktemp -d /tmp/pk-kms-serve-XXXXXX)
PID=
fails=0
passes=0
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null; fi
    rm -rf "$D"
}
trap cleanup EXIT INT TERM
ok() { passes=$((passes + 1)); echo "ok   $1"; }
bad() { fails=$((fails + 1)); echo "FAIL $1"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }

KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
DB="$D/kms.db"
KEK="$D/kms.kek"
A="--db $DB --kek $KEK --log-level warn"

check "ca init" "'$PK' ca init '$D/ca' >/dev/null"
check "ca issue kms" "'$PK' ca issue '$D/ca' kms >/dev/null"
check "ca issue node" "'$PK' ca issue '$D/ca' node-1 >/dev/null"
check "kms init" "'$PK' kms init $A >/dev/null"
check "kek is 0600" "[ \"\$(stat -c %a '$KEK')\" = 600 ]"
check "init again keeps the kek" "'$PK' kms init $A | grep -q kept"
check "device add (given key)" "'$PK' kms device add dev-1 --device-key $KEY $A >/dev/null"
check "device add (generated key)" "'$PK' kms device add dev-2 $A | grep -Eq 'key [0-9a-f]{64}$'"
check "device add twice fails" "! '$PK' kms device add dev-2 $A 2>/dev/null"
check "allow" "'$PK' kms allow dev-1 dev-2 $A >/dev/null"
check "pool create" "'$PK' kms pool create p0 8 $A | grep -q 'first KSI'"
check "device add pool" "'$PK' kms device add dev-3 --mode pool --pool p0 $A >/dev/null"
check "device list" "[ \"\$('$PK' kms device list $A | wc -l)\" = 3 ]"
check "device show" "'$PK' kms device show dev-1 $A | grep -q 'mode=pairs key_bits=256'"
check "usage error exits 2" "'$PK' kms allow dev-1 $A 2>/dev/null; [ \$? = 2 ]"
check "bad mode exits 2" "'$PK' kms device add x --mode nope $A 2>/dev/null; [ \$? = 2 ]"
check "help exits 0" "'$PK' kms device add --help >/dev/null"
chmod 644 "$KEK"
check "a 0644 kek is refused" "! '$PK' kms device list $A 2>/dev/null"
chmod 600 "$KEK"

"$PK" kms serve --db $DB --kek $KEK --log-level info --listen 127.0.0.1:0 --port-file "$D/port" --ca "$D/ca/ca.crt" \
    --cert "$D/ca/kms.crt" --key "$D/ca/kms.key" 2>"$D/serve.log" &
PID=$!
i=0
while [ ! -s "$D/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "serve listening" "[ -s '$D/port' ]"
PORT=$(cat "$D/port" 2>/dev/null)

check "client" "'$CLIENT' 127.0.0.1:$PORT '$D/ca/ca.crt' '$D/ca/node-1.crt' '$D/ca/node-1.key' node-1 dev-1 $KEY dev-2"

kill -TERM "$PID"
i=0
while kill -0 "$PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
wait "$PID"
rc=$?
PID=
check "clean stop on SIGTERM" "[ $rc = 0 ]"
check "stop logged with counters" "grep -q 'event=stopped vectors=51' '$D/serve.log' || { cat '$D/serve.log'; false; }"
"$PK" kms audit $A --limit 10000 >"$D/audit.txt"
check "audit has the vectors" "[ \"\$(grep -c 'what=vector node=node-1 device=dev-1' '$D/audit.txt')\" = 51 ]"
check "audit has the root keys" "[ \"\$(grep -c 'what=root_key' '$D/audit.txt')\" = 2 ]"
check "no key in the audit or the log" "! grep -qi '$KEY' '$D/audit.txt' '$D/serve.log'"
KEYMID=$(printf '\020\021\022\023\024\025\026\027\030\031')
check "no key in the database file" "! LC_ALL=C grep -qaF \"\$KEYMID\" '$DB' '$DB-wal' 2>/dev/null"
check "the file check can fail" "LC_ALL=C grep -qaF 'dev-1' '$DB' '$DB-wal' 2>/dev/null"
check "device remove" "'$PK' kms device remove dev-2 $A >/dev/null"
check "deny after remove finds nothing" "! '$PK' kms deny dev-1 dev-2 $A 2>/dev/null"

# groups: a big group is added in one command; a registration hands a
# device in mode pairs the root keys of up to 1024 peers (PK_REG_PEERS_MAX,
# in pages), so 33 or 34 peers draw no warning any more (they did when one
# accept of 32 keys was all a device got) and the admin is warned only past
# 1024
G=""
for i in $(seq 1 34); do
    "$PK" kms device add "g-$i" $A >/dev/null || bad "device add g-$i"
    [ "$i" -le 33 ] && G="$G g-$i"
done
check "group add of 33 in one command, no warning (32 peers each)" \
    "'$PK' kms group add big$G $A >/dev/null 2>'$D/group.err' && ! grep -q warning '$D/group.err'"
check "the 34th member (33 peers): no warning" \
    "'$PK' kms group add big g-34 $A >/dev/null 2>'$D/group.err' && ! grep -q warning '$D/group.err'"
check "allow of a 34th peer: no warning" "'$PK' kms allow g-1 dev-1 $A 2>&1 >/dev/null |
    { ! grep -q warning; }"
# past the bound: members need not be devices yet; 3 x 255 + 254 = 1019 new
# peers for g-1 (34 already), g-1 last, so the last command (256 positional
# arguments: the group and 255 members) takes it past 1024
for b in 1 2 3 4; do
    M=""
    for i in $(seq 1 $([ $b = 4 ] && echo 254 || echo 255)); do M="$M h-$b-$i"; done
    [ $b = 4 ] && M="$M g-1"
    "$PK" kms group add huge$M $A >/dev/null 2>"$D/huge.err" || bad "group add huge ($b)"
done
check "past 1024 peers: warned" \
    "grep -q 'warning: members of group huge now have up to 1053 allowed peers' '$D/huge.err'"
check "one warning (g-1 the last member)" "[ \$(grep -c warning '$D/huge.err') = 1 ]"

echo "$passes passed, $fails failed"
[ $fails = 0 ]
