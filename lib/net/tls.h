/*
 * The network transport between proxkey's servers (node <-> kms,
 * node <-> node, gts <-> kms): TCP with mutual TLS 1.3 (OpenSSL), carrying
 * length-prefixed frames.
 *
 * Security: TLS 1.3 only; both sides present a certificate from the
 * operator's CA (`proxkey ca`), verified against that CA alone (the system
 * trust store is never loaded). The peer's identity is the common name of
 * its certificate, which must be present, unique, 1..PK_TLS_CN_MAX printable
 * ASCII characters. A client names the server it expects (expected_cn) and
 * the handshake fails unless the server's CN is exactly that. A server
 * learns each client's CN in on_open and applies its own policy (e.g. only
 * "kms-*" may call kms methods) by closing the connection.
 *
 * Framing: every message is a 4-byte big-endian length followed by that many
 * bytes (0 allowed). A frame longer than the context's max_frame closes the
 * connection (reason PK_ERR_LIMIT) and is counted.
 *
 * Non-blocking connections run on a pk_loop_t. Callbacks:
 *   on_open(conn)        handshake done and the peer verified; pk_tls_conn_peer_cn()
 *                        is valid from here on;
 *   on_frame(conn, p, n) one complete frame; p is valid only during the call;
 *   on_close(conn, why)  the connection is gone; conn is freed when the callback
 *                        returns. why: PK_OK (peer closed cleanly), PK_ERR_AUTH
 *                        (handshake or certificate failure, CN mismatch),
 *                        PK_ERR_VERSION (peer offered no TLS 1.3), PK_ERR_LIMIT
 *                        (oversized frame, output queue overflow), PK_ERR_TIMEOUT
 *                        (handshake too slow), PK_ERR_IO (reset, refused, other).
 * Accepted (server-side) connections are reported to the application only
 * once open: one that fails its handshake is counted and logged, not reported.
 * A client connection (pk_tls_connect) always ends in exactly one on_close,
 * unless the application closes it with pk_tls_conn_close(). In TLS 1.3 a
 * client finishes its handshake before the server has checked the client's
 * certificate: a rejected client sees on_open, then on_close(PK_ERR_AUTH or
 * PK_ERR_IO).
 *
 * Callbacks may call pk_tls_conn_send() and pk_tls_conn_close() on any
 * connection, including their own; pk_tls_conn_close() from a callback takes
 * effect when it returns (no on_close for an application-closed connection).
 */
#ifndef PK_NET_TLS_H
#define PK_NET_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "net/addr.h"
#include "net/loop.h"

#define PK_TLS_CN_MAX               64
#define PK_TLS_DEFAULT_MAX_FRAME    (1u << 20)
#define PK_TLS_DEFAULT_HANDSHAKE_MS 10000u
#define PK_TLS_DEFAULT_MAX_OUTQ     (64u << 20)
#define PK_TLS_DEFAULT_MAX_CONNS    1024u

enum pk_tls_role { PK_TLS_SERVER = 1, PK_TLS_CLIENT = 2 };

typedef struct pk_tls_ctx pk_tls_ctx_t;
typedef struct pk_tls_conn pk_tls_conn_t;
typedef struct pk_tls_listener pk_tls_listener_t;

typedef struct pk_tls_stats {
    uint64_t accepted;         /* TCP connections accepted */
    uint64_t refused_conns;    /* closed at once: over max_conns */
    uint64_t opened;           /* handshakes completed and verified */
    uint64_t handshake_failed; /* certificate, version, CN, timeout */
    uint64_t oversized;        /* frames over max_frame */
    uint64_t frames_in, frames_out;
} pk_tls_stats_t;

typedef struct pk_tls_cbs {
    void (*on_open)(pk_tls_conn_t *c, void *ud);
    void (*on_frame)(pk_tls_conn_t *c, const uint8_t *p, size_t n, void *ud);
    void (*on_close)(pk_tls_conn_t *c, int why, void *ud);
    void *ud; /* passed to every callback; per connection, see pk_tls_conn_set_ud() */
} pk_tls_cbs_t;

/*
 * A TLS context for one role: loads the CA certificate(s) to verify peers
 * with (ca_file, PEM), this side's certificate chain (cert_file, PEM) and
 * private key (key_file, PEM), and checks that key and certificate match.
 * Returns PK_OK and *out, PK_ERR_INVAL, PK_ERR_IO (a file cannot be read or
 * parsed; the reason is logged), PK_ERR_CRYPTO or PK_ERR_NOMEM.
 * Side effect: SIGPIPE is set to SIG_IGN if it had its default disposition
 * (a write to a vanished peer must fail with EPIPE, not kill the daemon).
 */
int pk_tls_ctx_new(pk_tls_ctx_t **out, int role, const char *ca_file, const char *cert_file,
                   const char *key_file);

/* Frees the context. Listeners using it must be closed first. Connections
 * still alive (including accepted ones still in their handshake) are closed
 * without callbacks, so the loop they run on must still exist. NULL ok. */
void pk_tls_ctx_free(pk_tls_ctx_t *ctx);

/* Limits (0 restores the default). They apply to connections made later. */
void pk_tls_ctx_set_max_frame(pk_tls_ctx_t *ctx, size_t max_frame);
void pk_tls_ctx_set_handshake_timeout(pk_tls_ctx_t *ctx, uint32_t ms);
void pk_tls_ctx_set_max_outq(pk_tls_ctx_t *ctx, size_t bytes);
void pk_tls_ctx_set_max_conns(pk_tls_ctx_t *ctx, unsigned n); /* accepted, alive */
const pk_tls_stats_t *pk_tls_ctx_stats(const pk_tls_ctx_t *ctx);

/*
 * Listens on addr ("127.0.0.1:7000", port 0 for an ephemeral port) with a
 * server context; each accepted connection gets a copy of *cbs. Returns
 * PK_OK and *out, PK_ERR_INVAL (bad address or a client context), PK_ERR_IO
 * (bind/listen failed) or PK_ERR_NOMEM.
 */
int pk_tls_listen(pk_loop_t *loop, pk_tls_ctx_t *ctx, const char *addr, const pk_tls_cbs_t *cbs,
                  pk_tls_listener_t **out);
/* The bound address (the real port after port 0). */
int pk_tls_listener_addr(const pk_tls_listener_t *l, pk_addr_t *out);
/* Stops listening and frees the listener. Open connections are not closed. */
void pk_tls_listener_close(pk_tls_listener_t *l);

/*
 * Connects to addr with a client context, expecting a server whose
 * certificate CN is expected_cn. Returns PK_OK and *out (the connection is
 * in progress: on_open or on_close follows), PK_ERR_INVAL, PK_ERR_IO or
 * PK_ERR_NOMEM (no callback is called then).
 */
int pk_tls_connect(pk_loop_t *loop, pk_tls_ctx_t *ctx, const char *addr, const char *expected_cn,
                   const pk_tls_cbs_t *cbs, pk_tls_conn_t **out);

/*
 * Queues one frame (a copy of p[0..n)) and starts sending it; frames sent
 * before the handshake completes wait for it. Returns PK_OK, PK_ERR_LIMIT
 * (n > max_frame, or the output queue would exceed max_outq: nothing is
 * queued), PK_ERR_STATE (connection closing) or PK_ERR_NOMEM.
 */
int pk_tls_conn_send(pk_tls_conn_t *c, const void *p, size_t n);

/* Closes now (best-effort close_notify, queued output is discarded) and
 * frees the connection, after the current callback if called from one.
 * on_close is not called. */
void pk_tls_conn_close(pk_tls_conn_t *c);

/* The peer's certificate CN, "" before on_open. Valid while c lives. */
const char *pk_tls_conn_peer_cn(const pk_tls_conn_t *c);
/* The peer's address. */
const pk_addr_t *pk_tls_conn_peer_addr(const pk_tls_conn_t *c);
/* Bytes queued for sending (framed). */
size_t pk_tls_conn_pending(const pk_tls_conn_t *c);
void pk_tls_conn_set_ud(pk_tls_conn_t *c, void *ud);
void *pk_tls_conn_get_ud(const pk_tls_conn_t *c);

/*
 * Blocking client for CLIs and tests: connect, handshake, send one frame,
 * read one frame, close, all within timeout_ms. The response goes to
 * resp[0..*resp_len). Returns PK_OK, PK_ERR_TIMEOUT, PK_ERR_AUTH (the
 * server's certificate or CN is not accepted, or the server rejected ours),
 * PK_ERR_VERSION, PK_ERR_IO (connection refused or closed early),
 * PK_ERR_SPACE (the response is longer than cap), PK_ERR_LIMIT (request or
 * response longer than max_frame) or PK_ERR_INVAL.
 */
int pk_tls_client_call(pk_tls_ctx_t *ctx, const char *addr, const char *expected_cn,
                       const void *req, size_t req_len, uint8_t *resp, size_t cap, size_t *resp_len,
                       uint32_t timeout_ms);

/* The same as a session of several calls on one connection. */
typedef struct pk_tls_session pk_tls_session_t;
int pk_tls_client_open(pk_tls_ctx_t *ctx, const char *addr, const char *expected_cn,
                       uint32_t timeout_ms, pk_tls_session_t **out);
int pk_tls_client_exchange(pk_tls_session_t *s, const void *req, size_t req_len, uint8_t *resp,
                           size_t cap, size_t *resp_len, uint32_t timeout_ms);
const char *pk_tls_session_peer_cn(const pk_tls_session_t *s);
void pk_tls_client_close(pk_tls_session_t *s);

#endif
