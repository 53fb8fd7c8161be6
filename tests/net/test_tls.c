/*
 * Mutual TLS 1.3 with frames, over 127.0.0.1, with certificates from pk_ca.
 * A server (kms) echoes each frame with every byte + 1, and answers "whoami"
 * with the client's certificate CN. Refusals are checked on both sides.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "check.h"
#include "net/ca.h"
#include "net/tls.h"

#define BIG (256u * 1024u)

static char tmp[256], ca1[300], ca2[300];
static char p_ca1[400], p_ca2[400];
static char addr[PK_ADDR_STRLEN];
static uint16_t port;

static pk_loop_t *loop;
static pk_tls_ctx_t *srv_ctx;
static pk_tls_listener_t *lst;

static void path(char out[400], const char *dir, const char *file)
{
    snprintf(out, 400, "%s/%s", dir, file);
}

/* ---- the server ---- */

static struct {
    int opened, closed, last_why, frames;
    char cn[PK_TLS_CN_MAX + 1];
} srv;

static void srv_open(pk_tls_conn_t *c, void *ud)
{
    (void)ud;
    srv.opened++;
    snprintf(srv.cn, sizeof srv.cn, "%s", pk_tls_conn_peer_cn(c));
}

static void srv_frame(pk_tls_conn_t *c, const uint8_t *p, size_t n, void *ud)
{
    (void)ud;
    srv.frames++;
    if (n == 6 && memcmp(p, "whoami", 6) == 0) {
        const char *cn = pk_tls_conn_peer_cn(c);
        CHECK_EQ_INT(pk_tls_conn_send(c, cn, strlen(cn)), PK_OK);
        return;
    }
    uint8_t *r = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        r[i] = (uint8_t)(p[i] + 1);
    CHECK_EQ_INT(pk_tls_conn_send(c, r, n), PK_OK);
    free(r);
}

static void srv_close(pk_tls_conn_t *c, int why, void *ud)
{
    (void)c;
    (void)ud;
    srv.closed++;
    srv.last_why = why;
}

static const pk_tls_cbs_t srv_cbs = {srv_open, srv_frame, srv_close, NULL};

static pthread_t srv_th;
static void *srv_run(void *arg)
{
    (void)arg;
    pk_loop_run(loop);
    return NULL;
}
static void server_start(void)
{
    pthread_create(&srv_th, NULL, srv_run, NULL);
}
static void server_stop(void)
{
    usleep(50000); /* let the server finish what the client's last bytes started */
    pk_loop_stop(loop);
    pthread_join(srv_th, NULL);
}

static pk_tls_ctx_t *client_ctx(const char *trust_ca, const char *issuer_dir, const char *name)
{
    char crt[400], key[400], f[80];
    pk_tls_ctx_t *c = NULL;
    snprintf(f, sizeof f, "%s.crt", name);
    path(crt, issuer_dir, f);
    snprintf(f, sizeof f, "%s.key", name);
    path(key, issuer_dir, f);
    CHECK_EQ_INT(pk_tls_ctx_new(&c, PK_TLS_CLIENT, trust_ca, crt, key), PK_OK);
    return c;
}

/* ---- non-blocking client on the same loop ---- */

static struct {
    int opened, closed, why, responses, bad;
    char cn[PK_TLS_CN_MAX + 1];
    uint8_t *big;
} cli;

static void cli_open(pk_tls_conn_t *c, void *ud)
{
    (void)ud;
    cli.opened++;
    snprintf(cli.cn, sizeof cli.cn, "%s", pk_tls_conn_peer_cn(c));
    CHECK_EQ_INT(pk_tls_conn_send(c, cli.big, BIG), PK_OK);
    CHECK_EQ_INT(pk_tls_conn_send(c, NULL, 0), PK_OK);
    CHECK_EQ_INT(pk_tls_conn_send(c, "whoami", 6), PK_OK);
}

static void cli_frame(pk_tls_conn_t *c, const uint8_t *p, size_t n, void *ud)
{
    (void)ud;
    int k = cli.responses++;
    if (k == 0)
        cli.bad += !(n == 4 && memcmp(p, "qjoh", 4) == 0); /* "ping" + 1 */
    else if (k == 1) {
        int ok = n == BIG;
        for (size_t i = 0; ok && i < n; i++)
            ok = p[i] == (uint8_t)(cli.big[i] + 1);
        cli.bad += !ok;
    } else if (k == 2)
        cli.bad += n != 0;
    else if (k == 3) {
        cli.bad += !(n == 6 && memcmp(p, "node-1", 6) == 0);
        pk_tls_conn_close(c); /* from inside a callback: deferred, no on_close */
        pk_loop_stop(loop);
    } else
        cli.bad++;
}

static void cli_close(pk_tls_conn_t *c, int why, void *ud)
{
    (void)c;
    (void)ud;
    cli.closed++;
    cli.why = why;
    pk_loop_stop(loop);
}

static const pk_tls_cbs_t cli_cbs = {cli_open, cli_frame, cli_close, NULL};

static void guard_cb(pk_loop_t *l, uint64_t id, void *ctx)
{
    (void)id;
    *(int *)ctx = 1;
    pk_loop_stop(l);
}

static int run_loop(uint32_t ms)
{
    int fired = 0;
    uint64_t g = pk_loop_timer_add(loop, pk_loop_update_now(loop) + ms, guard_cb, &fired);
    pk_loop_run(loop);
    pk_loop_timer_cancel(loop, g);
    return fired;
}

static void test_frames_both_ways(void)
{
    pk_tls_ctx_t *cc = client_ctx(p_ca1, ca1, "node-1");
    pk_tls_conn_t *c = NULL;
    memset(&cli, 0, sizeof cli);
    memset(&srv, 0, sizeof srv);
    cli.big = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        cli.big[i] = (uint8_t)(i * 131 + (i >> 9));
    CHECK_EQ_INT(pk_tls_connect(loop, cc, addr, "kms", &cli_cbs, &c), PK_OK);
    CHECK(c != NULL);
    CHECK(strcmp(pk_tls_conn_peer_cn(c), "") == 0);      /* not verified yet */
    CHECK_EQ_INT(pk_tls_conn_send(c, "ping", 4), PK_OK); /* queued until open */
    CHECK_EQ_INT(run_loop(5000), 0);
    CHECK_EQ_INT(cli.opened, 1);
    CHECK(strcmp(cli.cn, "kms") == 0);
    CHECK_EQ_INT(cli.responses, 4);
    CHECK_EQ_INT(cli.bad, 0);
    CHECK_EQ_INT(cli.closed, 0); /* we closed it ourselves */
    /* The server saw the client's identity, then its clean close. */
    for (int i = 0; i < 50 && srv.closed == 0; i++)
        pk_loop_run_once(loop, 20);
    CHECK_EQ_INT(srv.opened, 1);
    CHECK(strcmp(srv.cn, "node-1") == 0);
    CHECK_EQ_INT(srv.frames, 4);
    CHECK_EQ_INT(srv.closed, 1);
    CHECK_EQ_INT(srv.last_why, PK_OK);
    CHECK(pk_tls_ctx_stats(srv_ctx)->frames_in >= 4);
    free(cli.big);
    pk_tls_ctx_free(cc);
}

static void test_wrong_expected_cn_nonblocking(void)
{
    pk_tls_ctx_t *cc = client_ctx(p_ca1, ca1, "node-1");
    pk_tls_conn_t *c = NULL;
    memset(&cli, 0, sizeof cli);
    CHECK_EQ_INT(pk_tls_connect(loop, cc, addr, "kms-other", &cli_cbs, &c), PK_OK);
    CHECK_EQ_INT(run_loop(5000), 0);
    CHECK_EQ_INT(cli.opened, 0);
    CHECK_EQ_INT(cli.closed, 1);
    CHECK_EQ_INT(cli.why, PK_ERR_AUTH);
    /* Connection refused: a port nobody listens on. */
    pk_addr_t a;
    pk_addr_parse("127.0.0.1:0", &a, NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    bind(s, (struct sockaddr *)&a.ss, a.len);
    pk_addr_local(s, &a);
    close(s);
    char dead[PK_ADDR_STRLEN];
    memset(&cli, 0, sizeof cli);
    CHECK_EQ_INT(pk_tls_connect(loop, cc, pk_addr_format(&a, dead), "kms", &cli_cbs, &c), PK_OK);
    CHECK_EQ_INT(run_loop(5000), 0);
    CHECK_EQ_INT(cli.closed, 1);
    CHECK_EQ_INT(cli.why, PK_ERR_IO);
    CHECK_EQ_INT(pk_tls_connect(loop, cc, "nonsense", "kms", &cli_cbs, &c), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_tls_connect(loop, srv_ctx, addr, "kms", &cli_cbs, &c), PK_ERR_INVAL);
    pk_tls_ctx_free(cc);
}

/* ---- blocking client, server on its own thread ---- */

static void test_blocking_calls(void)
{
    pk_tls_ctx_t *cc = client_ctx(p_ca1, ca1, "node-1");
    uint8_t resp[64];
    size_t n = 0;
    pk_tls_session_t *s = NULL;

    memset(&srv, 0, sizeof srv);
    server_start();
    CHECK_EQ_INT(pk_tls_client_call(cc, addr, "kms", "hello", 5, resp, sizeof resp, &n, 3000),
                 PK_OK);
    CHECK_EQ_INT(n, 5);
    CHECK_MEM(resp, "ifmmp", 5);
    CHECK_EQ_INT(pk_tls_client_open(cc, addr, "kms", 3000, &s), PK_OK);
    CHECK(s != NULL && strcmp(pk_tls_session_peer_cn(s), "kms") == 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(pk_tls_client_exchange(s, "whoami", 6, resp, sizeof resp, &n, 3000), PK_OK);
        CHECK(n == 6 && memcmp(resp, "node-1", 6) == 0);
    }
    /* A response bigger than the buffer. */
    CHECK_EQ_INT(pk_tls_client_exchange(s, "0123456789", 10, resp, 4, &n, 3000), PK_ERR_SPACE);
    CHECK_EQ_INT(pk_tls_client_exchange(s, "x", 1, resp, 4, &n, 3000), PK_ERR_STATE);
    pk_tls_client_close(s);
    server_stop();
    CHECK_EQ_INT(srv.opened, 2);
    pk_tls_ctx_free(cc);
}

static void test_client_from_other_ca_rejected(void)
{
    /* Trusts the right CA (so it accepts the server) but presents a
     * certificate for the same name issued by another CA. */
    pk_tls_ctx_t *cc = client_ctx(p_ca1, ca2, "node-1");
    uint8_t resp[64];
    size_t n = 0;
    uint64_t failed0 = pk_tls_ctx_stats(srv_ctx)->handshake_failed;

    memset(&srv, 0, sizeof srv);
    server_start();
    int rc = pk_tls_client_call(cc, addr, "kms", "hello", 5, resp, sizeof resp, &n, 3000);
    server_stop();
    CHECK_EQ_INT(rc, PK_ERR_AUTH);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(srv.opened, 0);
    CHECK_EQ_INT(srv.frames, 0);
    CHECK_EQ_INT(pk_tls_ctx_stats(srv_ctx)->handshake_failed, failed0 + 1);
    pk_tls_ctx_free(cc);

    /* The other way round: a client trusting only the other CA refuses our server. */
    cc = client_ctx(p_ca2, ca2, "node-1");
    server_start();
    rc = pk_tls_client_call(cc, addr, "kms", "hello", 5, resp, sizeof resp, &n, 3000);
    server_stop();
    CHECK_EQ_INT(rc, PK_ERR_AUTH);
    CHECK_EQ_INT(srv.opened, 0);
    pk_tls_ctx_free(cc);
}

static void test_wrong_expected_cn_blocking(void)
{
    pk_tls_ctx_t *cc = client_ctx(p_ca1, ca1, "node-1");
    uint8_t resp[64];
    size_t n = 0;
    server_start();
    /* node-2's certificate is valid, but it is not the server we asked for. */
    int rc = pk_tls_client_call(cc, addr, "node-2", "hello", 5, resp, sizeof resp, &n, 3000);
    int rc2 = pk_tls_client_call(cc, addr, "km", "hello", 5, resp, sizeof resp, &n, 3000);
    server_stop();
    CHECK_EQ_INT(rc, PK_ERR_AUTH);
    CHECK_EQ_INT(rc2, PK_ERR_AUTH); /* a prefix is not a match */
    pk_tls_ctx_free(cc);
}

/* A plain OpenSSL client: returns 1 if one frame round trip succeeded. */
static int raw_client(const char *trust, const char *crt, const char *key, int max_version,
                      int *handshake_ok)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int ok = 0, s = -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timeval tv = {.tv_sec = 3};

    *handshake_ok = 0;
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    SSL_CTX_set_max_proto_version(ctx, max_version);
    SSL_CTX_load_verify_locations(ctx, trust, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (crt != NULL) {
        SSL_CTX_use_certificate_chain_file(ctx, crt);
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM);
    }
    s = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) != 0)
        goto done;
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, s);
    if (SSL_connect(ssl) != 1)
        goto done;
    *handshake_ok = 1;
    uint8_t frame[9] = {0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'}, resp[9];
    if (SSL_write(ssl, frame, sizeof frame) != (int)sizeof frame)
        goto done;
    int got = 0;
    while (got < (int)sizeof resp) {
        int r = SSL_read(ssl, resp + got, (int)sizeof resp - got);
        if (r <= 0)
            goto done;
        got += r;
    }
    ok = memcmp(resp + 4, "ifmmp", 5) == 0;
done:
    ERR_clear_error();
    SSL_free(ssl);
    if (s >= 0)
        close(s);
    SSL_CTX_free(ctx);
    return ok;
}

static void test_raw_clients(void)
{
    char crt[400], key[400];
    int hs = 0;
    path(crt, ca1, "node-1.crt");
    path(key, ca1, "node-1.key");

    /* Sanity: the raw client works when it does everything right. */
    memset(&srv, 0, sizeof srv);
    server_start();
    CHECK_EQ_INT(raw_client(p_ca1, crt, key, TLS1_3_VERSION, &hs), 1);
    server_stop();
    CHECK_EQ_INT(srv.opened, 1);

    /* No client certificate: TLS 1.3 lets the client finish, then the
     * server refuses; no frame gets through. */
    uint64_t failed0 = pk_tls_ctx_stats(srv_ctx)->handshake_failed;
    memset(&srv, 0, sizeof srv);
    server_start();
    CHECK_EQ_INT(raw_client(p_ca1, NULL, NULL, TLS1_3_VERSION, &hs), 0);
    server_stop();
    CHECK_EQ_INT(srv.opened, 0);
    CHECK_EQ_INT(srv.frames, 0);
    CHECK_EQ_INT(pk_tls_ctx_stats(srv_ctx)->handshake_failed, failed0 + 1);

    /* TLS 1.2 at most: refused during the handshake. */
    server_start();
    CHECK_EQ_INT(raw_client(p_ca1, crt, key, TLS1_2_VERSION, &hs), 0);
    server_stop();
    CHECK_EQ_INT(hs, 0);
    CHECK_EQ_INT(srv.opened, 0);
    CHECK_EQ_INT(pk_tls_ctx_stats(srv_ctx)->handshake_failed, failed0 + 2);
}

static void test_oversized_frame_closes(void)
{
    pk_tls_ctx_t *cc = client_ctx(p_ca1, ca1, "node-1");
    size_t n = 0, max = PK_TLS_DEFAULT_MAX_FRAME;
    uint8_t *req = calloc(1, max + 1), *resp = malloc(max);
    uint64_t over0 = pk_tls_ctx_stats(srv_ctx)->oversized;

    pk_tls_ctx_set_max_frame(cc, 4u << 20); /* the client would send it */
    memset(&srv, 0, sizeof srv);
    server_start();
    /* Exactly the limit is fine... */
    CHECK_EQ_INT(pk_tls_client_call(cc, addr, "kms", req, max, resp, max, &n, 5000), PK_OK);
    CHECK_EQ_INT(n, max);
    CHECK_EQ_INT(resp[max - 1], 1);
    /* ...one byte more closes the connection. */
    int rc = pk_tls_client_call(cc, addr, "kms", req, max + 1, resp, max, &n, 5000);
    server_stop();
    CHECK_EQ_INT(rc, PK_ERR_IO);
    CHECK_EQ_INT(pk_tls_ctx_stats(srv_ctx)->oversized, over0 + 1);
    CHECK_EQ_INT(srv.opened, 2);
    CHECK_EQ_INT(srv.closed, 2);
    CHECK_EQ_INT(srv.last_why, PK_ERR_LIMIT);
    CHECK_EQ_INT(srv.frames, 1); /* the oversized one was never delivered */
    /* The sender's own limit: refused locally, nothing sent. */
    pk_tls_ctx_set_max_frame(cc, 0); /* back to 1 MiB */
    CHECK_EQ_INT(pk_tls_client_call(cc, addr, "kms", req, max + 1, resp, max, &n, 100),
                 PK_ERR_LIMIT);
    free(req);
    free(resp);
    pk_tls_ctx_free(cc);
}

static void test_handshake_timeout_and_client_timeout(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct timeval tv = {.tv_sec = 3};
    char b[16];
    uint64_t failed0 = pk_tls_ctx_stats(srv_ctx)->handshake_failed;

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    pk_tls_ctx_set_handshake_timeout(srv_ctx, 200);
    server_start();
    int s = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    CHECK(connect(s, (struct sockaddr *)&sa, sizeof sa) == 0);
    uint64_t t0 = pk_now_mono_ms();
    ssize_t r = recv(s, b, sizeof b, 0); /* silent client: the server hangs up */
    uint64_t took = pk_now_mono_ms() - t0;
    close(s);
    server_stop();
    pk_tls_ctx_set_handshake_timeout(srv_ctx, 0);
    CHECK(r <= 0);
    CHECK(took >= 150 && took < 2500);
    CHECK_EQ_INT(pk_tls_ctx_stats(srv_ctx)->handshake_failed, failed0 + 1);

    /* A server that accepts TCP but never speaks TLS: the client times out. */
    pk_tls_ctx_t *cc = client_ctx(p_ca1, ca1, "node-1");
    pk_addr_t a;
    char mute[PK_ADDR_STRLEN];
    uint8_t resp[8];
    size_t n;
    pk_addr_parse("127.0.0.1:0", &a, NULL);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(bind(l, (struct sockaddr *)&a.ss, a.len) == 0 && listen(l, 4) == 0);
    pk_addr_local(l, &a);
    t0 = pk_now_mono_ms();
    CHECK_EQ_INT(
        pk_tls_client_call(cc, pk_addr_format(&a, mute), "kms", "x", 1, resp, sizeof resp, &n, 200),
        PK_ERR_TIMEOUT);
    took = pk_now_mono_ms() - t0;
    CHECK(took >= 190 && took < 1500);
    close(l);
    pk_tls_ctx_free(cc);
}

static void test_ctx_errors(void)
{
    pk_tls_ctx_t *c = NULL;
    char crt[400], key[400], key2[400];
    path(crt, ca1, "node-1.crt");
    path(key, ca1, "node-1.key");
    path(key2, ca1, "node-2.key");
    CHECK_EQ_INT(pk_tls_ctx_new(&c, PK_TLS_CLIENT, "/nonexistent", crt, key), PK_ERR_IO);
    CHECK_EQ_INT(pk_tls_ctx_new(&c, PK_TLS_CLIENT, p_ca1, "/nonexistent", key), PK_ERR_IO);
    CHECK_EQ_INT(pk_tls_ctx_new(&c, PK_TLS_CLIENT, p_ca1, crt, key2), PK_ERR_IO); /* mismatch */
    CHECK_EQ_INT(pk_tls_ctx_new(&c, 7, p_ca1, crt, key), PK_ERR_INVAL);
    CHECK(c == NULL);
    pk_tls_listener_t *l = NULL;
    CHECK_EQ_INT(pk_tls_listen(loop, srv_ctx, "127.0.0.1", &srv_cbs, &l), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_tls_listen(loop, srv_ctx, addr, &srv_cbs, &l), PK_ERR_IO); /* in use */
}

int main(void)
{
    char crt[400], key[400];
    pk_addr_t a;

    snprintf(tmp, sizeof tmp, "/tmp/pk-tls-test-XXXXXX");
    if (mkdtemp(tmp) == NULL)
        return 1;
    snprintf(ca1, sizeof ca1, "%s/ca1", tmp);
    snprintf(ca2, sizeof ca2, "%s/ca2", tmp);
    path(p_ca1, ca1, "ca.crt");
    path(p_ca2, ca2, "ca.crt");
    if (pk_ca_create(ca1) != PK_OK || pk_ca_create(ca2) != PK_OK ||
        pk_ca_issue(ca1, "kms", NULL, NULL) != PK_OK ||
        pk_ca_issue(ca1, "node-1", NULL, NULL) != PK_OK ||
        pk_ca_issue(ca1, "node-2", NULL, NULL) != PK_OK ||
        pk_ca_issue(ca2, "node-1", NULL, NULL) != PK_OK) {
        fprintf(stderr, "cannot make the test CA\n");
        return 1;
    }
    loop = pk_loop_new();
    path(crt, ca1, "kms.crt");
    path(key, ca1, "kms.key");
    if (loop == NULL || pk_tls_ctx_new(&srv_ctx, PK_TLS_SERVER, p_ca1, crt, key) != PK_OK ||
        pk_tls_listen(loop, srv_ctx, "127.0.0.1:0", &srv_cbs, &lst) != PK_OK ||
        pk_tls_listener_addr(lst, &a) != PK_OK) {
        fprintf(stderr, "cannot start the test server\n");
        return 1;
    }
    port = pk_addr_port(&a);
    pk_addr_format(&a, addr);

    RUN(test_frames_both_ways);
    RUN(test_wrong_expected_cn_nonblocking);
    RUN(test_blocking_calls);
    RUN(test_client_from_other_ca_rejected);
    RUN(test_wrong_expected_cn_blocking);
    RUN(test_raw_clients);
    RUN(test_oversized_frame_closes);
    RUN(test_handshake_timeout_and_client_timeout);
    RUN(test_ctx_errors);

    pk_tls_listener_close(lst);
    pk_tls_ctx_free(srv_ctx);
    pk_loop_free(loop);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    return check_report();
}
