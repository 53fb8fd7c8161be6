#!/usr/bin/env bash
# System test: the root-keys demo scenario as assertions, with real daemons
# on loopback (a dev CA, `kms serve`, two `node serve`, devices through the
# CLI), on SQLite (default) or PostgreSQL (MODE pg, PK_TEST_PG from
# scripts/pg-harness.sh run).
#   A  option 1 and option 2 links across the nodes, both ways; the disallowed
#      pairs refused, never holding a key or indication, none in the audit log
#   B  kms and both nodes restarted: every root key and KSI identical
#   C  two kms instances on one database, each serving one node; concurrent
#      option-2 allocations from both nodes: no pool KSI for two pairs
#   D  bad input to node-1's UDP port: dropped and counted by reason, no
#      answer larger than the request, and a fresh registration still works
set -u
P=$(realpath "${1:?usage: system.sh PROXKEY [sqlite|pg]}")
MODE=${2:-sqlite}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
pk_setup pk-sys
T0=$SECONDS
if [ "$MODE" = pg ]; then
    DB=${PK_TEST_PG:?PK_TEST_PG is not set: run under scripts/pg-harness.sh run}
else
    DB=$W/kms.db
fi
K=(--db "$DB" --kek kms.kek --log-level warn)
note() { echo "-- $* ($((SECONDS - T0)) s)"; }
TO="timeout 20"

note "setup ($MODE)"
$P ca init ca >/dev/null || fail "ca init"
for n in kms node-1 node-2; do $P ca issue ca $n >/dev/null || fail "ca issue $n"; done
$P kms init "${K[@]}" >/dev/null || fail "kms init"
$P kms pool create p 64 "${K[@]}" >/dev/null || fail "pool create"
declare -A KEY
add() { # ID [pool]
    local extra=()
    [ "${2:-}" = pool ] && extra=(--mode pool --pool p)
    KEY[$1]=$($P kms device add "$1" "${extra[@]}" "${K[@]}" | sed -n 's/.* key \([0-9a-f]*\)$/\1/p')
    [ ${#KEY[$1]} -eq 64 ] || fail "device add $1"
}
add dev-a1; add dev-b1; add dev-a2 pool; add dev-b2 pool
for i in 1 2 3 4; do add c$i pool; add d$i pool; done
$P kms allow dev-a1 dev-b1 "${K[@]}" >/dev/null || fail "allow a1 b1"
$P kms allow dev-a2 dev-b2 "${K[@]}" >/dev/null || fail "allow a2 b2"
$P kms group add race c1 c2 c3 c4 d1 d2 d3 d4 "${K[@]}" >/dev/null || fail "group add"

GEN=0
start_all() { # [two]: a second kms instance on the same database serves node-2
    GEN=$((GEN + 1))
    pk_kms kms1-$GEN "$DB"
    KA1=$KMS_ADDR KMS1_PID=$KMS_PID KA2=$KMS_ADDR KMS2_PID=
    if [ "${1:-}" = two ]; then
        pk_kms kms2-$GEN "$DB"
        KA2=$KMS_ADDR KMS2_PID=$KMS_PID
    fi
    T1=127.0.0.1:$(pk_free_port tcp) T2=127.0.0.1:$(pk_free_port tcp)
    pk_node node-1 "$KA1" "$T1" "node-2=$T2" n1-$GEN.log
    N1=$NODE_UDP N1_PID=$NODE_PID
    pk_node node-2 "$KA2" "$T2" "node-1=$T1" n2-$GEN.log
    N2=$NODE_UDP N2_PID=$NODE_PID
}
stop_all() {
    for p in $N1_PID $N2_PID $KMS1_PID $KMS2_PID; do pk_stop "$p"; done
}
node_of() { case $1 in dev-a* | c*) echo "127.0.0.1:$N1 node-1" ;; *) echo "127.0.0.1:$N2 node-2" ;; esac; }
reg() { # ID...: (re-)register with its node's current address
    local d a
    for d in "$@"; do
        read -r a _ <<<"$(node_of "$d")"
        $TO $P device register --dir "$d" --node "$a" >"reg-$d.log" 2>&1 || fail "register $d"
    done
}
dinit() {
    local d a n
    for d in "$@"; do
        read -r a n <<<"$(node_of "$d")"
        $P device init --dir "$d" --id "$d" --key "${KEY[$d]}" --node "$a" --node-id "$n" \
            >/dev/null || fail "device init $d"
    done
}
link() { # FROM TO [--node]: one message over a direct link
    local L=127.0.0.1:$(pk_free_port udp) lp
    timeout 15 $P device listen --dir "$2" --listen "$L" --count 1 --timeout 12 ${3:-} \
        >"l-$1-$2.log" 2>&1 &
    lp=$!
    PIDS+=($lp)
    pk_wait_for "l-$1-$2.log" "listening on"
    $TO $P device send "$2" "hi $2 from $1" --dir "$1" --to "$L" >"s-$1-$2.log" 2>&1 ||
        fail "send $1 -> $2: $(cat "s-$1-$2.log")"
    wait $lp || fail "listen $2 (from $1)"
    grep -q "text=hi $2 from $1" "l-$1-$2.log" || fail "$2 did not receive from $1"
}
audit() { $P kms audit --limit 1000 "${K[@]}"; }

# ---------------------------------------------------------------- A
note "A: the demo scenario"
start_all
dinit dev-a1 dev-a2 dev-b1 dev-b2
reg dev-a1 dev-a2 dev-b1 dev-b2
grep -q "mode=pairs keys=1" reg-dev-a1.log || fail "dev-a1: one root key expected"
grep -q "mode=pool keys=32" reg-dev-a2.log || fail "dev-a2: a pool key set expected"
KSI_A=$($P device keys --dir dev-a1 | sed -n 's/^ksi=\(0x[0-9a-f]*\) peer=dev-b1 .*/\1/p')
[ -n "$KSI_A" ] || fail "dev-a1 has no root key for dev-b1"
$P device keys --dir dev-b1 | grep -q "^ksi=$KSI_A peer=dev-a1 " || fail "dev-b1: not the same KSI"
link dev-a1 dev-b1
link dev-b1 dev-a1
link dev-a2 dev-b2 --node
link dev-b2 dev-a2 --node
grep -q "node_link_indicated initiator=dev-a2 target=dev-b2" n2-1.log || fail "node-2 indication"
grep -q "node_link_indicated initiator=dev-b2 target=dev-a2" n1-1.log || fail "node-1 indication"
# not allowed: no key (option 1) and a refused allocation (option 2)
$TO $P device send dev-b2 x --dir dev-a1 --to 127.0.0.1:9 >deny1.log 2>&1 && fail "a1 -> b2 sent"
grep -q "unknown peer 'dev-b2'" deny1.log || fail "a1 -> b2: $(cat deny1.log)"
$TO $P device send dev-b1 x --dir dev-a2 --to 127.0.0.1:9 --tries 2 >deny2.log 2>&1 &&
    fail "a2 -> b1 sent"
grep -q "refused a link to dev-b1: not allowed" deny2.log || fail "a2 -> b1: $(cat deny2.log)"
$TO $P device send dev-a2 x --dir dev-b1 --to 127.0.0.1:9 >deny3.log 2>&1 && fail "b1 -> a2 sent"
for d in dev-a1 dev-a2 dev-b1 dev-b2; do $P device keys --dir "$d" >"keys-$d.txt" || fail "keys $d"; done
grep -q "peer=dev-b2" keys-dev-a1.txt && fail "dev-a1 holds something for dev-b2"
grep -q "peer=dev-b1" keys-dev-a2.txt && fail "dev-a2 holds something for dev-b1"
grep -Eq "peer=dev-a2|peer=dev-b2" keys-dev-b1.txt && fail "dev-b1 holds something for a2/b2"
grep -q "peer=dev-a1" keys-dev-b2.txt && fail "dev-b2 holds something for dev-a1"
audit >audit-a.txt || fail "kms audit"
grep -v "node=admin" audit-a.txt | grep -E \
    "device=dev-a1 .*peer=dev-b2|device=dev-b2 .*peer=dev-a1|device=dev-a2 .*peer=dev-b1|device=dev-b1 .*peer=dev-a2" &&
    fail "the audit log shows an issuance to a disallowed pair"
[ "$(grep -c "what=pool_alloc" audit-a.txt)" -ge 2 ] || fail "no pool allocations in the audit log"
grep -q "what=root_key node=node-1 device=dev-a1 peer=dev-b1" audit-a.txt || fail "root key audit"

# ---------------------------------------------------------------- B
note "B: restart the kms and both nodes"
reg dev-a1 dev-a2 dev-b1 dev-b2 # key sets as of now
snap() { for d in dev-a1 dev-a2 dev-b1 dev-b2; do
    $P device keys --dir "$d" --show-secrets | grep "^ksi=" | sed "s/^/$d /"
done; }
snap >keys-before.txt
[ "$(wc -l <keys-before.txt)" -eq 66 ] || fail "expected 1+32+1+32 keys, got $(wc -l <keys-before.txt)"
stop_all
start_all
reg dev-a1 dev-a2 dev-b1 dev-b2
snap >keys-after.txt
cmp -s keys-before.txt keys-after.txt || fail "keys changed across the restart: $(diff keys-before.txt keys-after.txt | head -5)"
link dev-a1 dev-b1 # the restarted daemons serve; the stored link's key is the same

# ---------------------------------------------------------------- C
note "C: two kms instances on one database, concurrent option-2 allocations"
stop_all
start_all two
dinit c1 c2 c3 c4 d1 d2 d3 d4
reg c1 c2 c3 c4 d1 d2 d3 d4
race() { # DEV PEER...: LINK_REQs in turn (the direct link itself is not needed)
    local d=$1 p
    shift
    for p in "$@"; do
        timeout 20 $P device send "$p" x --dir "$d" --to 127.0.0.1:9 --tries 2 --rto-ms 700 \
            >>"race-$d.log" 2>&1
    done
}
RP=()
for i in 1 2 3 4; do
    j=$((i % 4 + 1))
    race c$i d$i d$j &
    RP+=($!)
    race d$i c$i c$j &
    RP+=($!)
done
PIDS+=("${RP[@]}")
wait "${RP[@]}"
grep -h "refused\|did not answer after" race-*.log | grep -v "peer '" && fail "a race LINK_REQ failed"
audit >audit-c.txt || fail "kms audit"
grep "what=pool_alloc" audit-c.txt | sed 's/.* node=\([^ ]*\) device=\([^ ]*\) peer=\([^ ]*\) ksi=\([0-9]*\).*/\4 \1 \2 \3/' |
    awk '{ a = $3 < $4 ? $3 " " $4 : $4 " " $3; n[$2]++
           if (($1 in pair) && pair[$1] != a) { print "KSI " $1 " twice: " pair[$1] " and " a; bad = 1 }
           pair[$1] = a; pairs[a] = 1 }
         END { np = 0; for (x in pairs) np++
               printf "allocations: node-1 %d, node-2 %d, pairs %d\n", n["node-1"], n["node-2"], np
               exit bad || np < 13 || !n["node-1"] || !n["node-2"] }' ||
    fail "pool KSI allocation: $(grep -c pool_alloc audit-c.txt) records"
grep -q "from=kms to=node-1 type=0x45" kms1-$GEN.log || fail "kms instance 1 served no allocation"
grep -q "from=kms to=node-2 type=0x45" kms2-$GEN.log || fail "kms instance 2 served no allocation"

# ---------------------------------------------------------------- D
note "D: bad input to node-1"
timeout 40 python3 "$HERE/udp_tool.py" relay relay.port "$N1" relay.rec 30 &
PIDS+=($!)
for _ in $(seq 1 50); do [ -s relay.port ] && break; sleep 0.1; done
RELAY=127.0.0.1:$(cat relay.port)
$TO $P device register --dir c1 --node "$RELAY" >reg-c1-relay.log 2>&1 || fail "register via relay"
$TO $P device send d2 x --dir c1 --to 127.0.0.1:9 --tries 1 --rto-ms 700 >relay-send.log 2>&1
grep -q "^10" relay.rec || fail "no LINK_REQ recorded ($(cat relay-send.log))"
drops() { # the node's counters as "reason count" lines after a SIGHUP
    local n
    n=$(grep -c "event=node_stats" n1-$GEN.log)
    kill -HUP "$N1_PID"
    for _ in $(seq 1 50); do [ "$(grep -c "event=node_stats" n1-$GEN.log)" -gt "$n" ] && break; sleep 0.1; done
    sleep 0.1
    awk '/event=node_stats/ { delete c } /event=node_drops/ {
        for (i = 1; i <= NF; i++) { if ($i ~ /^reason=/) r = substr($i, 8); if ($i ~ /^count=/) c[r] = substr($i, 7) } }
        END { for (r in c) print r, c[r] }' n1-$GEN.log | sort
}
drops >drops-before.txt
python3 "$HERE/udp_tool.py" attack "$N1" relay.rec >attack.log 2>&1 || fail "attack: $(cat attack.log)"
sleep 0.3
drops >drops-after.txt
cnt() { awk -v r="$2" '$1 == r { v = $2 } END { print v + 0 }' "$1"; }
for r in malformed oversized version replay; do
    [ "$(cnt drops-after.txt $r)" -gt "$(cnt drops-before.txt $r)" ] ||
        fail "drop reason $r not counted: before $(tr '\n' ' ' <drops-before.txt) after $(tr '\n' ' ' <drops-after.txt)"
done
b=$(($(cnt drops-before.txt bad_res) + $(cnt drops-before.txt no_entry)))
a=$(($(cnt drops-after.txt bad_res) + $(cnt drops-after.txt no_entry)))
[ "$a" -gt "$b" ] || fail "the wrong RES was not counted (bad_res/no_entry $b -> $a)"
kill -0 "$N1_PID" || fail "node-1 died"
# still serving, state unchanged: c1's channel continues, a fresh registration works
$TO $P device send d3 x --dir c1 --to 127.0.0.1:9 --tries 2 --rto-ms 700 >relay-send2.log 2>&1
grep -q "peer 'd3' at 127.0.0.1:9 did not answer" relay-send2.log ||
    fail "c1's channel broken after the attack (no LINK_IND): $(cat relay-send2.log)"
reg c2
sed 's/^/  /' attack.log
echo "  drops after: $(tr '\n' ' ' <drops-after.txt)"
note "system $MODE ok"
