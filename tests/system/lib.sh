# Shared helpers for the shell tests that run real proxkey daemons on
# loopback (tests/system/system.sh, tests/node/integration.sh). Source it
# after setting P (the proxkey executable) and W (the work directory, the
# current directory). Every process started through pk_bg is killed by PID
# on exit (pk_cleanup, installed as the EXIT trap by pk_setup).
PIDS=()
pk_setup() { # prefix
    W=$(mktemp -d "/tmp/$1.XXXXXX") || exit 1
    trap pk_cleanup EXIT
    trap 'exit 130' INT TERM
    cd "$W" || exit 1
}
pk_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$W"
}
fail() {
    echo "FAIL: $*"
    for f in "$W"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -15 "$f"; }; done
    exit 1
}
pk_wait_for() { # file pattern [tenths of a second, default 100]
    local i
    for i in $(seq 1 "${3:-100}"); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    fail "timeout waiting for '$2' in $1"
}
pk_free_port() { # tcp|udp: a port the kernel says is free now
    python3 -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_STREAM if sys.argv[1]=="tcp" else socket.SOCK_DGRAM)
s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}
# pk_kms NAME DB: starts `kms serve` (log NAME.log, port file NAME.port);
# sets KMS_PID and KMS_ADDR.
pk_kms() {
    rm -f "$1.port"
    $P kms serve --db "$2" --kek kms.kek --ca ca/ca.crt --cert ca/kms.crt --key ca/kms.key \
        --listen 127.0.0.1:0 --port-file "$1.port" --log-level debug >"$1.log" 2>&1 &
    KMS_PID=$!
    PIDS+=($KMS_PID)
    local i
    for i in $(seq 1 100); do [ -s "$1.port" ] && break; sleep 0.1; done
    [ -s "$1.port" ] || fail "kms $1 did not start"
    KMS_ADDR=127.0.0.1:$(cat "$1.port")
}
# pk_node ID KMS_ADDR TLS_ADDR PEER_SPEC LOG: starts `node serve`; sets
# NODE_PID and NODE_UDP (its UDP port).
pk_node() {
    $P node serve --id "$1" --listen-udp 127.0.0.1:0 --listen-tls "$3" --kms "$2" \
        --ca ca/ca.crt --cert "ca/$1.crt" --key "ca/$1.key" --peer "$4" --stats-ms 0 \
        --log-level debug >"$5" 2>&1 &
    NODE_PID=$!
    PIDS+=($NODE_PID)
    pk_wait_for "$5" node_kms_connected
    NODE_UDP=$(sed -n 's/.*event=node_listening.* udp_port=\([0-9]*\).*/\1/p' "$5" | head -1)
}
# pk_stop PID: SIGTERM and wait (bounded), then SIGKILL.
pk_stop() {
    kill -TERM "$1" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}
