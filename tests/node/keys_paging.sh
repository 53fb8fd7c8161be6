#!/usr/bin/env bash
# Integration: paged key sets with the real daemons on 127.0.0.1. A device in
# mode pairs with 70 allowed peers (more than the 32 keys one ACCEPT holds)
# registers with `proxkey node serve` backed by `proxkey kms serve`: the
# accept brings the first 32 keys, KEYS_REQ/KEYS records over real UDP bring
# the rest, and `proxkey device keys` shows all 70 - each the same key (KSI
# and value) that the peer itself is given when it registers.
set -u
P=${1:?usage: keys_paging.sh PROXKEY}
W=$(mktemp -d /tmp/pk-keys-it.XXXXXX)
PIDS=()
fail() { echo "FAIL: $*"; for f in "$W"/*.log; do echo "== $f"; tail -20 "$f"; done; exit 1; }
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
cd "$W" || exit 1
K="--db kms.db --kek kms.kek"
N=70

wait_for() { # file pattern
    for _ in $(seq 1 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    fail "timeout waiting for '$2' in $1"
}
port_of() { sed -n "s/.*event=node_listening.* $2=\([0-9]*\).*/\1/p" "$1" | head -1; }
key() { $P kms device add "$1" $K 2>/dev/null | sed -n 's/.* key \([0-9a-f]*\)$/\1/p'; }

$P ca init ca >/dev/null || fail "ca init"
for n in kms node-1; do $P ca issue ca $n >/dev/null || fail "ca issue $n"; done
$P kms init $K >/dev/null 2>&1 || fail "kms init"
KBIG=$(key dev-big)
[ ${#KBIG} -eq 64 ] || fail "device add dev-big"
M=""
for i in $(seq -w 1 $N); do
    k=$(key "peer-$i")
    [ ${#k} -eq 64 ] || fail "device add peer-$i"
    [ "$i" = 37 ] && K37=$k
    M="$M peer-$i"
done
# one group: no warning below 1024 peers
$P kms group add crowd dev-big$M $K >/dev/null 2>grp.err || fail "group add"
grep -q warning grp.err && fail "a warning for $N peers"

$P kms serve $K --ca ca/ca.crt --cert ca/kms.crt --key ca/kms.key --listen 127.0.0.1:0 \
    --port-file kms.port >kms.log 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s kms.port ] && break; sleep 0.05; done
KMS=127.0.0.1:$(cat kms.port)
$P node serve --id node-1 --listen-udp 127.0.0.1:0 --listen-tls 127.0.0.1:0 --kms "$KMS" \
    --ca ca/ca.crt --cert ca/node-1.crt --key ca/node-1.key --stats-ms 0 >n1.log 2>&1 &
PIDS+=($!)
wait_for n1.log node_kms_connected
UDP=$(port_of n1.log udp_port)

$P device init --dir big --id dev-big --key "$KBIG" --node "127.0.0.1:$UDP" --node-id node-1 \
    >/dev/null || fail "device init dev-big"
$P device register --dir big >reg-big.log 2>&1 || fail "dev-big register"
grep -q "mode=pairs keys=$N\$" reg-big.log || fail "dev-big: not $N keys"
grep -q warning reg-big.log && fail "dev-big: keys missing"
$P device keys --dir big --show-secrets >keys-big.log || fail "device keys"
grep -q "mode=pairs keys=$N\$" keys-big.log || fail "device keys header"
[ "$(grep -c '^ksi=' keys-big.log)" = $N ] || fail "device keys: not $N key lines"
for i in $(seq -w 1 $N); do
    grep -q "^ksi=0x[0-9a-f]* peer=peer-$i mode=pairs " keys-big.log || fail "no key for peer-$i"
done
[ "$(sed -n 's/^ksi=\(0x[0-9a-f]*\) .*/\1/p' keys-big.log | sort -u | wc -l)" = $N ] ||
    fail "KSIs not distinct"

# the pair's key is the peer's too (the 37th: on the accept's second page)
$P device init --dir p37 --id peer-37 --key "$K37" --node "127.0.0.1:$UDP" --node-id node-1 \
    >/dev/null || fail "device init peer-37"
$P device register --dir p37 >reg-37.log 2>&1 || fail "peer-37 register"
$P device keys --dir p37 --show-secrets >keys-37.log || fail "device keys peer-37"
A=$(sed -n 's/^\(ksi=0x[0-9a-f]*\) peer=peer-37 mode=pairs expiry=registration key=\([0-9a-f]*\)$/\1 \2/p' keys-big.log)
B=$(sed -n 's/^\(ksi=0x[0-9a-f]*\) peer=dev-big mode=pairs expiry=registration key=\([0-9a-f]*\)$/\1 \2/p' keys-37.log)
[ -n "$A" ] && [ "$A" = "$B" ] || fail "dev-big's key for peer-37 ($A) is not peer-37's ($B)"

# the node counted the pages it fetched and sealed (its stats line on
# SIGTERM): 70 keys = the accept's 32 + 32 + 6, two pages for each of the two
# devices (the group allows every pair of its members: peer-37 has 70 peers
# too)
kill -TERM "${PIDS[-1]}"
wait "${PIDS[-1]}" 2>/dev/null
grep -q "key_pages_asked=4 key_pages_sent=4" n1.log || fail "node page counters"
grep -q "mode=pairs keys=$N\$" reg-37.log || fail "peer-37: not $N keys"

# the registration survives in the state file: a second read shows the same
$P device keys --dir big --show-secrets >keys-big2.log || fail "device keys again"
cmp -s keys-big.log keys-big2.log || fail "state file does not hold the same keys"
echo "keys paging ok"
