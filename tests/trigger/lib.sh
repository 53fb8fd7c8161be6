# Shared by the trigger shell tests (sourced; set DIR before): a scratch
# directory removed at exit with the server killed, fail(), and gts_start.
#   gts_start CMD...   runs CMD (a `gts serve ... --listen 127.0.0.1:0`) in
#                      the background, logging to $DIR/gts.log; sets SRV to
#                      its pid and PORT to the port it announced
SRV=0
cleanup() {
    [ "$SRV" != 0 ] && kill -9 "$SRV" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    [ -f "$DIR/gts.log" ] && tail -5 "$DIR/gts.log"
    exit 1
}
gts_start() {
    : >"$DIR/gts.log"
    "$@" 2>"$DIR/gts.log" &
    SRV=$!
    PORT=""
    for _ in $(seq 1 50); do
        PORT=$(sed -n 's/.*event=gts_listening port=\([0-9]*\).*/\1/p' "$DIR/gts.log" | head -1)
        [ -n "$PORT" ] && return 0
        kill -0 "$SRV" 2>/dev/null || fail "gts did not start"
        sleep 0.1
    done
    fail "no gts_listening line"
}
