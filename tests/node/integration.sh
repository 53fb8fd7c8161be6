#!/usr/bin/env bash
# Integration: a dev CA, `proxkey kms serve` and two `proxkey node serve` on
# 127.0.0.1 (ports chosen by the kernel), devices provisioned with the kms
# admin CLI and registered with `proxkey device` (the device core over real
# UDP). Checks: accepts with the right keys, a wrong-key device refused,
# garbage datagrams dropped and counted while the node keeps serving, an
# option-2 link from node-1's device to node-2's device, clean SIGTERM.
set -u
P=${1:?usage: integration.sh PROXKEY}
W=$(mktemp -d /tmp/pk-node-it.XXXXXX)
PIDS=()
fail() { echo "FAIL: $*"; for f in "$W"/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
cd "$W" || exit 1
K="--db kms.db --kek kms.kek"

wait_for() { # file pattern
    for _ in $(seq 1 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    fail "timeout waiting for '$2' in $1"
}
port_of() { sed -n "s/.*event=node_listening.* $2=\([0-9]*\).*/\1/p" "$1" | head -1; }

$P ca init ca >/dev/null || fail "ca init"
for n in kms node-1 node-2; do $P ca issue ca $n >/dev/null || fail "ca issue $n"; done
$P kms init $K >/dev/null 2>&1 || fail "kms init"
$P kms pool create p 64 $K >/dev/null 2>&1 || fail "pool"
key() { $P kms device add "$1" --mode pool --pool p $K 2>/dev/null | sed -n 's/.* key \([0-9a-f]*\)$/\1/p'; }
KA=$(key dev-a); KB=$(key dev-b); KC=$(key dev-c)
[ ${#KA} -eq 64 ] && [ ${#KB} -eq 64 ] || fail "device add"
$P kms allow dev-a dev-b $K >/dev/null 2>&1 || fail "allow"

$P kms serve $K --ca ca/ca.crt --cert ca/kms.crt --key ca/kms.key --listen 127.0.0.1:0 \
    --port-file kms.port >kms.log 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s kms.port ] && break; sleep 0.05; done
KMS=127.0.0.1:$(cat kms.port)

node() { # id udp-log peer-spec
    $P node serve --id "$1" --listen-udp 127.0.0.1:0 --listen-tls 127.0.0.1:0 --kms "$KMS" \
        --ca ca/ca.crt --cert "ca/$1.crt" --key "ca/$1.key" --peer "$3" --stats-ms 0 >"$2" 2>&1 &
    PIDS+=($!)
    wait_for "$2" node_kms_connected
}
# node-2 first: node-1 needs its TLS address. node-2 only has to accept node-1
# (its CN), never to connect to it, so its address for node-1 is a dummy.
node node-2 n2.log node-1=127.0.0.1:9
N2UDP=$(port_of n2.log udp_port); N2TLS=$(port_of n2.log tls_port)
node node-1 n1.log node-2=127.0.0.1:$N2TLS
N1UDP=$(port_of n1.log udp_port); N1PID=${PIDS[-1]}

dinit() { $P device init --dir "$1" --id "$2" --key "$3" --node "127.0.0.1:$4" --node-id "$5" >/dev/null; }
dinit da dev-a "$KA" "$N1UDP" node-1
dinit db dev-b "$KB" "$N2UDP" node-2
dinit dbad dev-c "$KA" "$N1UDP" node-1   # dev-c with dev-a's key: wrong key

$P device register --dir da >reg-a.log 2>&1 || fail "dev-a register"
grep -q "temp_id=[0-9a-f]*@node-1 mode=pool keys=32" reg-a.log || fail "dev-a accept content"
$P device register --dir db >reg-b.log 2>&1 || fail "dev-b register"
# the keys the device got are the kms's pool keys: the first KSI is 1
$P device keys --dir da | grep -q "ksi=0x00000001" || fail "dev-a keys"

# the wrong-key device refuses the node's challenge (AUTN) and never registers
if $P device register --dir dbad --tries 2 --rto-ms 100 >reg-c.log 2>&1; then
    fail "a wrong-key device registered"
fi

# garbage: wrong sizes, wrong types, a random LINK_REQ-typed record, an oversized one
for i in $(seq 1 50); do
    printf '\x01garbage%03d' "$i" >/dev/udp/127.0.0.1/$N1UDP
    printf '\x10%0100d' "$i" >/dev/udp/127.0.0.1/$N1UDP
    printf '\x7f' >/dev/udp/127.0.0.1/$N1UDP
done
head -c 600 /dev/zero >/dev/udp/127.0.0.1/$N1UDP
sleep 0.3
# still serving: dev-a registers again
$P device register --dir da >reg-a2.log 2>&1 || fail "dev-a re-register after garbage"

# option 2: dev-a (node-1) -> dev-b (node-2)
timeout 10 $P device listen --dir db --listen 127.0.0.1:0 --count 1 --timeout 8 --node >lb.log 2>&1 &
LPID=$!
for _ in $(seq 1 100); do grep -q "listening on" lb.log && break; sleep 0.05; done
LADDR=$(sed -n 's/listening on \([0-9.:]*\).*/\1/p' lb.log)
timeout 10 $P device send dev-b "hello via two nodes" --dir da --to "$LADDR" >send.log 2>&1 ||
    fail "option-2 send"
wait $LPID
grep -q "text=hello via two nodes" lb.log || fail "dev-b did not receive"
grep -q "node_link_indicated initiator=dev-a target=dev-b" n2.log || fail "node-2 indication"

# counters: SIGTERM logs them and the node exits 0
kill -TERM "$N1PID"
wait "$N1PID"; rc=$?
[ $rc -eq 0 ] || fail "node-1 exit status $rc"
grep -q "event=node_drops reason=malformed" n1.log || fail "malformed drops not counted"
grep -q "event=node_drops reason=oversized count=1" n1.log || fail "oversized drop not counted"
grep -q "event=node_drops reason=no_context\|event=node_drops reason=auth" n1.log ||
    fail "LINK_REQ garbage not counted"
echo "integration ok"
