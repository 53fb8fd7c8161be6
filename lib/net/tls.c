#include "net/tls.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"

#define READ_CHUNK      16384u
#define READ_BUDGET     (4u << 20) /* bytes decrypted per event before yielding */
#define ACCEPT_BURST    64
#define ACCEPT_PAUSE_MS 100 /* listener backs off this long on EMFILE */

enum { DROP_HANDSHAKE, DROP_OVERSIZED, DROP_TOO_MANY, DROP_HS_TIMEOUT, DROP_N };
static const char *const drop_names[DROP_N] = {"tls_handshake_failed", "tls_oversized_frame",
                                               "tls_too_many_conns", "tls_handshake_timeout"};

struct pk_tls_ctx {
    SSL_CTX *ssl;
    int role;
    size_t max_frame, max_outq;
    uint32_t hs_ms;
    unsigned max_conns, nconns; /* server-side connections alive */
    struct pk_tls_conn *conns;  /* every live connection, for pk_tls_ctx_free() */
    pk_tls_stats_t st;
    pk_drops_t drops;
};

/* Who the peer must be and who it turned out to be; the SSL's app data. */
struct peer_id {
    char expected[PK_TLS_CN_MAX + 1]; /* "" = any CN (server side) */
    char cn[PK_TLS_CN_MAX + 1];
    int cn_ok;
};

enum conn_state { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSED };

struct pk_tls_conn {
    pk_loop_t *loop;
    pk_tls_ctx_t *ctx;
    SSL *ssl;
    int fd;
    int state;
    int is_client;
    int reported; /* the application knows this connection (on_close owed) */
    int fatal;    /* a fatal TLS/socket error: no close_notify */
    int dead;     /* closed; free when busy drops to 0 */
    unsigned busy;
    unsigned interest;
    int hs_wants_write, read_wants_write, write_wants_read;
    uint64_t hs_timer, resume_timer;
    pk_addr_t peer;
    struct peer_id id;
    pk_tls_cbs_t cbs;
    size_t max_frame, max_outq;
    uint8_t *in;
    size_t in_off, in_len, in_cap;
    uint8_t *out;
    size_t out_off, out_len, out_cap;
    struct pk_tls_conn *prev, *next; /* in ctx->conns */
};

struct pk_tls_listener {
    pk_loop_t *loop;
    pk_tls_ctx_t *ctx;
    int fd;
    pk_tls_cbs_t cbs;
    uint64_t pause_timer;
};

static void conn_close(pk_tls_conn_t *c, int why, int report);
static void conn_free(pk_tls_conn_t *c);

/* ---- certificate identity ---- */

/* The subject CN of x: exactly one, 1..PK_TLS_CN_MAX printable ASCII bytes. */
static int cert_cn(X509 *x, char out[static PK_TLS_CN_MAX + 1])
{
    X509_NAME *name = X509_get_subject_name(x);
    unsigned char *utf8 = NULL;
    int rc = -1;

    out[0] = '\0';
    if (name == NULL)
        return -1;
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (i < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, i) >= 0)
        return -1;
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    int len = ASN1_STRING_to_UTF8(&utf8, s);
    if (len < 1 || len > PK_TLS_CN_MAX)
        goto done;
    for (int k = 0; k < len; k++)
        if (utf8[k] < 0x21 || utf8[k] > 0x7e)
            goto done;
    memcpy(out, utf8, (size_t)len);
    out[len] = '\0';
    rc = 0;
done:
    OPENSSL_free(utf8);
    return rc;
}

static int verify_cb(int preverify_ok, X509_STORE_CTX *xs)
{
    if (!preverify_ok)
        return 0;
    if (X509_STORE_CTX_get_error_depth(xs) != 0)
        return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct peer_id *id = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    X509 *leaf = X509_STORE_CTX_get_current_cert(xs);
    if (id == NULL || leaf == NULL)
        return 0;
    if (cert_cn(leaf, id->cn) != 0) {
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    if (id->expected[0] != '\0' && strcmp(id->expected, id->cn) != 0) {
        X509_STORE_CTX_set_error(xs, X509_V_ERR_HOSTNAME_MISMATCH);
        return 0;
    }
    id->cn_ok = 1;
    return 1;
}

/* Maps the error after a failed SSL call to a PK_ERR_* reason. */
static int classify(int ssl_err)
{
    unsigned long e;
    int why = PK_ERR_IO;

    if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return ssl_err == SSL_ERROR_ZERO_RETURN ? PK_OK : PK_ERR_IO;
    }
    while ((e = ERR_get_error()) != 0) {
        if (ERR_GET_LIB(e) != ERR_LIB_SSL)
            continue;
        int r = ERR_GET_REASON(e);
        if (r == SSL_R_UNSUPPORTED_PROTOCOL || r == SSL_R_NO_PROTOCOLS_AVAILABLE ||
            r == SSL_R_VERSION_TOO_LOW || r == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION)
            why = PK_ERR_VERSION;
        else if (r == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            why = why == PK_ERR_VERSION ? why : PK_ERR_IO;
        else if (why != PK_ERR_VERSION)
            why = PK_ERR_AUTH; /* certificate, verification, alerts, handshake */
    }
    return why;
}

/* ---- context ---- */

static void log_ssl_error(const char *event, const char *what)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof buf);
    pk_error(event, "file=%s ssl_error=\"%s\"", what ? what : "-", e ? buf : "unknown");
    ERR_clear_error();
}

/* OpenSSL writes to sockets with write(2): a peer that has gone away would
 * kill the process with SIGPIPE. Ignore it unless the program chose a handler. */
static void ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
}

int pk_tls_ctx_new(pk_tls_ctx_t **out, int role, const char *ca_file, const char *cert_file,
                   const char *key_file)
{
    pk_tls_ctx_t *c = NULL;
    int rc = PK_ERR_INVAL;

    *out = NULL;
    ignore_sigpipe();
    if ((role != PK_TLS_SERVER && role != PK_TLS_CLIENT) || ca_file == NULL || cert_file == NULL ||
        key_file == NULL)
        return PK_ERR_INVAL;
    rc = PK_ERR_NOMEM;
    c = calloc(1, sizeof *c);
    if (c == NULL)
        goto done;
    c->role = role;
    c->max_frame = PK_TLS_DEFAULT_MAX_FRAME;
    c->max_outq = PK_TLS_DEFAULT_MAX_OUTQ;
    c->hs_ms = PK_TLS_DEFAULT_HANDSHAKE_MS;
    c->max_conns = PK_TLS_DEFAULT_MAX_CONNS;
    pk_drops_init(&c->drops, drop_names, DROP_N);
    ERR_clear_error();
    c->ssl = SSL_CTX_new(role == PK_TLS_SERVER ? TLS_server_method() : TLS_client_method());
    rc = PK_ERR_CRYPTO;
    if (c->ssl == NULL)
        goto done;
    if (!SSL_CTX_set_min_proto_version(c->ssl, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(c->ssl, TLS1_3_VERSION))
        goto done;
    rc = PK_ERR_IO;
    if (SSL_CTX_load_verify_locations(c->ssl, ca_file, NULL) != 1) {
        log_ssl_error("tls_ca_load_failed", ca_file);
        goto done;
    }
    if (SSL_CTX_use_certificate_chain_file(c->ssl, cert_file) != 1) {
        log_ssl_error("tls_cert_load_failed", cert_file);
        goto done;
    }
    if (SSL_CTX_use_PrivateKey_file(c->ssl, key_file, SSL_FILETYPE_PEM) != 1) {
        log_ssl_error("tls_key_load_failed", key_file);
        goto done;
    }
    if (SSL_CTX_check_private_key(c->ssl) != 1) {
        log_ssl_error("tls_key_mismatch", key_file);
        goto done;
    }
    SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    SSL_CTX_set_verify_depth(c->ssl, 4);
    SSL_CTX_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(c->ssl, SSL_OP_NO_TICKET);
    if (role == PK_TLS_SERVER) {
        SSL_CTX_set_num_tickets(c->ssl, 0);
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
        if (names != NULL)
            SSL_CTX_set_client_CA_list(c->ssl, names); /* adopted */
    }
    *out = c;
    c = NULL;
    rc = PK_OK;
done:
    pk_tls_ctx_free(c);
    return rc;
}

void pk_tls_ctx_free(pk_tls_ctx_t *ctx)
{
    if (ctx == NULL)
        return;
    while (ctx->conns != NULL) {
        pk_tls_conn_t *c = ctx->conns;
        conn_close(c, PK_OK, 0);
        conn_free(c); /* unlinks c */
    }
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

void pk_tls_ctx_set_max_frame(pk_tls_ctx_t *ctx, size_t v)
{
    ctx->max_frame = v ? v : PK_TLS_DEFAULT_MAX_FRAME;
    if (ctx->max_frame > 0xffffffffu)
        ctx->max_frame = 0xffffffffu;
}
void pk_tls_ctx_set_handshake_timeout(pk_tls_ctx_t *ctx, uint32_t ms)
{
    ctx->hs_ms = ms ? ms : PK_TLS_DEFAULT_HANDSHAKE_MS;
}
void pk_tls_ctx_set_max_outq(pk_tls_ctx_t *ctx, size_t v)
{
    ctx->max_outq = v ? v : PK_TLS_DEFAULT_MAX_OUTQ;
}
void pk_tls_ctx_set_max_conns(pk_tls_ctx_t *ctx, unsigned n)
{
    ctx->max_conns = n ? n : PK_TLS_DEFAULT_MAX_CONNS;
}
const pk_tls_stats_t *pk_tls_ctx_stats(const pk_tls_ctx_t *ctx)
{
    return &ctx->st;
}

/* ---- connections ---- */

const char *pk_tls_conn_peer_cn(const pk_tls_conn_t *c)
{
    return c->state == ST_OPEN || (c->state == ST_CLOSED && c->id.cn_ok) ? c->id.cn : "";
}
const pk_addr_t *pk_tls_conn_peer_addr(const pk_tls_conn_t *c)
{
    return &c->peer;
}
size_t pk_tls_conn_pending(const pk_tls_conn_t *c)
{
    return c->out_len - c->out_off;
}
void pk_tls_conn_set_ud(pk_tls_conn_t *c, void *ud)
{
    c->cbs.ud = ud;
}
void *pk_tls_conn_get_ud(const pk_tls_conn_t *c)
{
    return c->cbs.ud;
}

static void conn_free(pk_tls_conn_t *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (c->ctx->conns == c)
        c->ctx->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    SSL_free(c->ssl);
    free(c->in);
    free(c->out);
    free(c);
}

static void drop(pk_tls_conn_t *c, unsigned reason)
{
    char a[PK_ADDR_STRLEN];
    pk_drop(&c->ctx->drops, reason, pk_loop_now_ms(c->loop), pk_addr_format(&c->peer, a));
}

/* Tears the connection down; reports on_close if the application knows it.
 * The memory is freed by the caller's release() (or here if not busy). */
static void conn_close(pk_tls_conn_t *c, int why, int report)
{
    if (c->state == ST_CLOSED)
        return;
    int prev = c->state, was_open = prev == ST_OPEN;
    c->state = ST_CLOSED;
    pk_loop_timer_cancel(c->loop, c->hs_timer);
    pk_loop_timer_cancel(c->loop, c->resume_timer);
    pk_loop_del_fd(c->loop, c->fd);
    if (was_open && !c->fatal) {
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl); /* best effort close_notify */
        ERR_clear_error();
    }
    if (c->fatal) {
        /* Read what the peer already sent (bounded) before closing: closing
         * with unread bytes makes TCP send a reset, which can destroy the
         * alert just sent before the peer reads it. */
        char junk[4096];
        for (int i = 0; i < 16 && read(c->fd, junk, sizeof junk) > 0; i++)
            ;
        (void)shutdown(c->fd, SHUT_WR);
    }
    close(c->fd);
    c->fd = -1;
    if (!c->is_client)
        c->ctx->nconns--;
    if (prev == ST_HANDSHAKE && report) {
        c->ctx->st.handshake_failed++;
        if (!c->is_client)
            drop(c, why == PK_ERR_TIMEOUT ? DROP_HS_TIMEOUT : DROP_HANDSHAKE);
    }
    if (report && c->reported && c->cbs.on_close != NULL) {
        c->busy++;
        c->cbs.on_close(c, why, c->cbs.ud);
        c->busy--;
    }
    c->dead = 1;
}

static void release(pk_tls_conn_t *c)
{
    if (c->dead && c->busy == 0)
        conn_free(c);
}

static void fail(pk_tls_conn_t *c, int ssl_err)
{
    int why = classify(ssl_err);
    if (ssl_err == SSL_ERROR_SSL || ssl_err == SSL_ERROR_SYSCALL)
        c->fatal = 1;
    if (c->state != ST_OPEN && why == PK_OK)
        why = PK_ERR_IO; /* EOF during the handshake */
    conn_close(c, why, 1);
}

static void update_interest(pk_tls_conn_t *c)
{
    if (c->state == ST_CLOSED)
        return;
    unsigned ev = PK_EV_READ;
    if (c->state == ST_CONNECTING)
        ev = PK_EV_WRITE;
    else if (c->state == ST_HANDSHAKE && c->hs_wants_write)
        ev |= PK_EV_WRITE;
    else if (c->state == ST_OPEN &&
             ((c->out_len > c->out_off && !c->write_wants_read) || c->read_wants_write))
        ev |= PK_EV_WRITE;
    if (ev != c->interest && pk_loop_mod_fd(c->loop, c->fd, ev) == PK_OK)
        c->interest = ev;
}

static void parse_frames(pk_tls_conn_t *c)
{
    while (c->state == ST_OPEN && !c->dead) {
        size_t avail = c->in_len - c->in_off;
        if (avail < 4)
            break;
        const uint8_t *h = c->in + c->in_off;
        uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (len > c->max_frame) {
            c->ctx->st.oversized++;
            drop(c, DROP_OVERSIZED);
            conn_close(c, PK_ERR_LIMIT, 1);
            return;
        }
        if (avail - 4 < len)
            break;
        c->in_off += 4 + (size_t)len;
        c->ctx->st.frames_in++;
        if (c->cbs.on_frame != NULL)
            c->cbs.on_frame(c, h + 4, len, c->cbs.ud);
    }
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
}

/* Makes room for READ_CHUNK more bytes. At most one incomplete frame is kept,
 * so the buffer never exceeds 4 + max_frame + READ_CHUNK. */
static int in_reserve(pk_tls_conn_t *c)
{
    if (c->in_cap - c->in_len >= READ_CHUNK)
        return 0;
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
        if (c->in_cap - c->in_len >= READ_CHUNK)
            return 0;
    }
    size_t ncap = c->in_cap ? c->in_cap * 2 : 2 * READ_CHUNK;
    if (ncap < c->in_len + READ_CHUNK)
        ncap = c->in_len + READ_CHUNK;
    uint8_t *n = realloc(c->in, ncap);
    if (n == NULL)
        return -1;
    c->in = n;
    c->in_cap = ncap;
    return 0;
}

static void resume_cb(pk_loop_t *loop, uint64_t id, void *ctx);

static void do_read(pk_tls_conn_t *c)
{
    size_t total = 0;

    c->read_wants_write = 0;
    while (c->state == ST_OPEN && !c->dead) {
        if (total >= READ_BUDGET) {
            /* Yield; decrypted bytes held inside OpenSSL would get no epoll event. */
            if (SSL_has_pending(c->ssl) && c->resume_timer == 0)
                c->resume_timer = pk_loop_timer_add(c->loop, pk_loop_now_ms(c->loop), resume_cb, c);
            return;
        }
        if (in_reserve(c) != 0) {
            conn_close(c, PK_ERR_NOMEM, 1);
            return;
        }
        ERR_clear_error();
        int r = SSL_read(c->ssl, c->in + c->in_len, (int)(c->in_cap - c->in_len));
        if (r > 0) {
            c->in_len += (size_t)r;
            total += (size_t)r;
            parse_frames(c);
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            return;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->read_wants_write = 1;
            return;
        }
        fail(c, e);
        return;
    }
}

static void do_write(pk_tls_conn_t *c)
{
    c->write_wants_read = 0;
    while (c->state == ST_OPEN && c->out_off < c->out_len) {
        size_t n = c->out_len - c->out_off;
        if (n > (1u << 20))
            n = 1u << 20;
        ERR_clear_error();
        int r = SSL_write(c->ssl, c->out + c->out_off, (int)n);
        if (r > 0) {
            c->out_off += (size_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE)
            return;
        if (e == SSL_ERROR_WANT_READ) {
            c->write_wants_read = 1;
            return;
        }
        fail(c, e);
        return;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
}

static void do_handshake(pk_tls_conn_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
        int e = SSL_get_error(c->ssl, r);
        c->hs_wants_write = e == SSL_ERROR_WANT_WRITE;
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            fail(c, e);
        return;
    }
    if (!c->id.cn_ok) { /* cannot happen with verify_cb; refuse rather than trust */
        c->fatal = 1;
        conn_close(c, PK_ERR_AUTH, 1);
        return;
    }
    pk_loop_timer_cancel(c->loop, c->hs_timer);
    c->hs_timer = 0;
    c->state = ST_OPEN;
    c->hs_wants_write = 0;
    c->ctx->st.opened++;
    c->reported = 1;
    if (c->cbs.on_open != NULL)
        c->cbs.on_open(c, c->cbs.ud);
    /* Application data may have arrived with the last handshake flight. */
    do_read(c);
    do_write(c);
}

static void conn_event(pk_loop_t *loop, int fd, unsigned events, void *ctx)
{
    pk_tls_conn_t *c = ctx;
    (void)loop;
    (void)fd;
    c->busy++;
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            c->fatal = 1;
            conn_close(c, PK_ERR_IO, 1);
        } else {
            c->state = ST_HANDSHAKE;
            do_handshake(c);
        }
    } else if (c->state == ST_HANDSHAKE) {
        do_handshake(c);
    } else if (c->state == ST_OPEN) {
        if ((events & (PK_EV_READ | PK_EV_ERR)) || (c->read_wants_write && (events & PK_EV_WRITE)))
            do_read(c);
        if (c->state == ST_OPEN && c->out_len > c->out_off)
            do_write(c);
    }
    c->busy--;
    update_interest(c);
    release(c);
}

static void hs_timeout_cb(pk_loop_t *loop, uint64_t id, void *ctx)
{
    pk_tls_conn_t *c = ctx;
    (void)loop;
    (void)id;
    c->hs_timer = 0;
    c->busy++;
    c->fatal = 1;
    conn_close(c, PK_ERR_TIMEOUT, 1);
    c->busy--;
    release(c);
}

static void resume_cb(pk_loop_t *loop, uint64_t id, void *ctx)
{
    pk_tls_conn_t *c = ctx;
    (void)loop;
    (void)id;
    c->resume_timer = 0;
    c->busy++;
    do_read(c);
    if (c->state == ST_OPEN && c->out_len > c->out_off)
        do_write(c);
    c->busy--;
    update_interest(c);
    release(c);
}

static pk_tls_conn_t *conn_new(pk_loop_t *loop, pk_tls_ctx_t *ctx, int fd, const pk_tls_cbs_t *cbs)
{
    pk_tls_conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->ssl = SSL_new(ctx->ssl);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    SSL_set_app_data(c->ssl, &c->id);
    c->loop = loop;
    c->ctx = ctx;
    c->fd = fd;
    c->cbs = *cbs;
    c->max_frame = ctx->max_frame;
    c->max_outq = ctx->max_outq;
    c->next = ctx->conns;
    if (ctx->conns != NULL)
        ctx->conns->prev = c;
    ctx->conns = c;
    return c;
}

int pk_tls_conn_send(pk_tls_conn_t *c, const void *p, size_t n)
{
    if (c->state == ST_CLOSED || c->dead)
        return PK_ERR_STATE;
    if (n > c->max_frame || (n > 0 && p == NULL))
        return n > c->max_frame ? PK_ERR_LIMIT : PK_ERR_INVAL;
    size_t queued = c->out_len - c->out_off;
    if (queued + 4 + n > c->max_outq)
        return PK_ERR_LIMIT;
    if (c->out_cap - c->out_len < 4 + n) {
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, queued);
            c->out_len = queued;
            c->out_off = 0;
        }
        if (c->out_cap - c->out_len < 4 + n) {
            size_t ncap = c->out_cap ? c->out_cap * 2 : 16384;
            if (ncap < c->out_len + 4 + n)
                ncap = c->out_len + 4 + n;
            uint8_t *b = realloc(c->out, ncap);
            if (b == NULL)
                return PK_ERR_NOMEM;
            c->out = b;
            c->out_cap = ncap;
        }
    }
    uint8_t *h = c->out + c->out_len;
    h[0] = (uint8_t)(n >> 24);
    h[1] = (uint8_t)(n >> 16);
    h[2] = (uint8_t)(n >> 8);
    h[3] = (uint8_t)n;
    if (n > 0)
        memcpy(h + 4, p, n);
    c->out_len += 4 + n;
    c->ctx->st.frames_out++;
    /* The write happens from the loop (EPOLLOUT), never inside this call, so
     * a send from any callback cannot re-enter the application. */
    update_interest(c);
    return PK_OK;
}

void pk_tls_conn_close(pk_tls_conn_t *c)
{
    if (c == NULL || c->dead)
        return;
    conn_close(c, PK_OK, 0);
    release(c);
}

int pk_tls_connect(pk_loop_t *loop, pk_tls_ctx_t *ctx, const char *addr, const char *expected_cn,
                   const pk_tls_cbs_t *cbs, pk_tls_conn_t **out)
{
    pk_addr_t a;
    const char *why = NULL;
    int fd, one = 1;

    *out = NULL;
    if (ctx->role != PK_TLS_CLIENT || expected_cn == NULL || expected_cn[0] == '\0' ||
        strlen(expected_cn) > PK_TLS_CN_MAX)
        return PK_ERR_INVAL;
    if (pk_addr_parse(addr, &a, &why) != PK_OK) {
        pk_error("tls_bad_address", "addr=\"%s\" why=\"%s\"", addr ? addr : "", why);
        return PK_ERR_INVAL;
    }
    fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return PK_ERR_IO;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&a.ss, a.len) != 0 && errno != EINPROGRESS) {
        close(fd);
        return PK_ERR_IO;
    }
    pk_tls_conn_t *c = conn_new(loop, ctx, fd, cbs);
    if (c == NULL) {
        close(fd);
        return PK_ERR_NOMEM;
    }
    c->is_client = 1;
    c->reported = 1;
    c->peer = a;
    c->state = ST_CONNECTING;
    strcpy(c->id.expected, expected_cn);
    SSL_set_connect_state(c->ssl);
    (void)SSL_set_tlsext_host_name(c->ssl, expected_cn);
    c->interest = PK_EV_WRITE;
    if (pk_loop_add_fd(loop, fd, PK_EV_WRITE, conn_event, c) != PK_OK) {
        close(fd);
        conn_free(c);
        return PK_ERR_IO;
    }
    c->hs_timer = pk_loop_timer_add(loop, pk_loop_now_ms(loop) + ctx->hs_ms, hs_timeout_cb, c);
    *out = c;
    return PK_OK;
}

/* ---- listener ---- */

static void listener_event(pk_loop_t *loop, int fd, unsigned events, void *ctx);

static void listener_resume(pk_loop_t *loop, uint64_t id, void *ctx)
{
    pk_tls_listener_t *l = ctx;
    (void)id;
    l->pause_timer = 0;
    pk_loop_mod_fd(loop, l->fd, PK_EV_READ);
}

static void listener_event(pk_loop_t *loop, int fd, unsigned events, void *ctx)
{
    pk_tls_listener_t *l = ctx;
    pk_tls_ctx_t *tctx = l->ctx;
    (void)events;
    for (int i = 0; i < ACCEPT_BURST; i++) {
        pk_addr_t peer = {.len = sizeof peer.ss};
        int cfd = accept4(fd, (struct sockaddr *)&peer.ss, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Level-triggered: back off instead of spinning on the backlog. */
                pk_warn("tls_accept_failed", "errno=%d", errno);
                pk_loop_mod_fd(loop, fd, 0);
                l->pause_timer = pk_loop_timer_add(loop, pk_loop_now_ms(loop) + ACCEPT_PAUSE_MS,
                                                   listener_resume, l);
            }
            return;
        }
        tctx->st.accepted++;
        if (tctx->nconns >= tctx->max_conns) {
            char a[PK_ADDR_STRLEN];
            tctx->st.refused_conns++;
            pk_drop(&tctx->drops, DROP_TOO_MANY, pk_loop_now_ms(loop), pk_addr_format(&peer, a));
            close(cfd);
            continue;
        }
        int one = 1;
        (void)setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pk_tls_conn_t *c = conn_new(loop, tctx, cfd, &l->cbs);
        if (c == NULL) {
            close(cfd);
            continue;
        }
        c->peer = peer;
        c->state = ST_HANDSHAKE;
        SSL_set_accept_state(c->ssl);
        c->interest = PK_EV_READ;
        if (pk_loop_add_fd(loop, cfd, PK_EV_READ, conn_event, c) != PK_OK) {
            close(cfd);
            conn_free(c);
            continue;
        }
        tctx->nconns++;
        c->hs_timer = pk_loop_timer_add(loop, pk_loop_now_ms(loop) + tctx->hs_ms, hs_timeout_cb, c);
    }
}

int pk_tls_listen(pk_loop_t *loop, pk_tls_ctx_t *ctx, const char *addr, const pk_tls_cbs_t *cbs,
                  pk_tls_listener_t **out)
{
    pk_addr_t a;
    const char *why = NULL;
    int fd = -1, one = 1;
    pk_tls_listener_t *l = NULL;

    *out = NULL;
    if (ctx->role != PK_TLS_SERVER)
        return PK_ERR_INVAL;
    if (pk_addr_parse(addr, &a, &why) != PK_OK) {
        pk_error("tls_bad_address", "addr=\"%s\" why=\"%s\"", addr ? addr : "", why);
        return PK_ERR_INVAL;
    }
    l = calloc(1, sizeof *l);
    if (l == NULL)
        return PK_ERR_NOMEM;
    fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto io_fail;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a.ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)&a.ss, a.len) != 0 || listen(fd, 128) != 0) {
        char b[PK_ADDR_STRLEN];
        pk_error("tls_listen_failed", "addr=%s errno=%d", pk_addr_format(&a, b), errno);
        goto io_fail;
    }
    l->loop = loop;
    l->ctx = ctx;
    l->fd = fd;
    l->cbs = *cbs;
    if (pk_loop_add_fd(loop, fd, PK_EV_READ, listener_event, l) != PK_OK)
        goto io_fail;
    *out = l;
    return PK_OK;
io_fail:
    if (fd >= 0)
        close(fd);
    free(l);
    return PK_ERR_IO;
}

int pk_tls_listener_addr(const pk_tls_listener_t *l, pk_addr_t *out)
{
    return pk_addr_local(l->fd, out);
}

void pk_tls_listener_close(pk_tls_listener_t *l)
{
    if (l == NULL)
        return;
    pk_loop_timer_cancel(l->loop, l->pause_timer);
    pk_loop_del_fd(l->loop, l->fd);
    close(l->fd);
    free(l);
}

/* ---- blocking client ---- */

struct pk_tls_session {
    pk_tls_ctx_t *ctx;
    SSL *ssl;
    int fd;
    int broken; /* a failed exchange left the stream out of step */
    struct peer_id id;
};

static int64_t ms_left(uint64_t deadline)
{
    uint64_t now = pk_now_mono_ms();
    return now >= deadline ? 0 : (int64_t)(deadline - now);
}

/* Waits for fd to become readable (want_write 0) or writable (1). */
static int wait_fd(int fd, int want_write, uint64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = want_write ? POLLOUT : POLLIN};
    for (int i = 0; i < 1000; i++) {
        int64_t left = ms_left(deadline);
        if (left <= 0)
            return PK_ERR_TIMEOUT;
        int r = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
        if (r > 0)
            return PK_OK;
        if (r < 0 && errno != EINTR)
            return PK_ERR_IO;
    }
    return PK_ERR_TIMEOUT;
}

/* Runs one SSL operation (op: 0 connect, 1 read, 2 write) to completion or
 * deadline. Returns bytes (read/write), 1 (connect) or a PK_ERR_* code. */
static int ssl_blocking(pk_tls_session_t *s, int op, void *buf, size_t n, uint64_t deadline)
{
    for (int i = 0; i < 100000; i++) {
        ERR_clear_error();
        int r = op == 0   ? SSL_connect(s->ssl)
                : op == 1 ? SSL_read(s->ssl, buf, (int)n)
                          : SSL_write(s->ssl, buf, (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            int rc = wait_fd(s->fd, e == SSL_ERROR_WANT_WRITE, deadline);
            if (rc != PK_OK)
                return rc;
            continue;
        }
        int why = classify(e);
        return why == PK_OK ? PK_ERR_IO : why; /* EOF before an answer */
    }
    return PK_ERR_TIMEOUT;
}

static int ssl_full(pk_tls_session_t *s, int op, uint8_t *buf, size_t n, uint64_t deadline)
{
    size_t done = 0;
    while (done < n) {
        size_t k = n - done > (1u << 20) ? (1u << 20) : n - done;
        int r = ssl_blocking(s, op, buf + done, k, deadline);
        if (r < 0)
            return r;
        done += (size_t)r;
    }
    return PK_OK;
}

int pk_tls_client_open(pk_tls_ctx_t *ctx, const char *addr, const char *expected_cn,
                       uint32_t timeout_ms, pk_tls_session_t **out)
{
    pk_addr_t a;
    int rc, one = 1;
    uint64_t deadline = pk_now_mono_ms() + timeout_ms;

    *out = NULL;
    if (ctx->role != PK_TLS_CLIENT || expected_cn == NULL || expected_cn[0] == '\0' ||
        strlen(expected_cn) > PK_TLS_CN_MAX || pk_addr_parse(addr, &a, NULL) != PK_OK)
        return PK_ERR_INVAL;
    pk_tls_session_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return PK_ERR_NOMEM;
    s->ctx = ctx;
    strcpy(s->id.expected, expected_cn);
    s->fd = socket(a.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    rc = PK_ERR_IO;
    if (s->fd < 0)
        goto fail;
    (void)setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(s->fd, (const struct sockaddr *)&a.ss, a.len) != 0) {
        if (errno != EINPROGRESS)
            goto fail;
        rc = wait_fd(s->fd, 1, deadline);
        if (rc != PK_OK)
            goto fail;
        int err = 0;
        socklen_t len = sizeof err;
        rc = PK_ERR_IO;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)
            goto fail;
    }
    rc = PK_ERR_NOMEM;
    s->ssl = SSL_new(ctx->ssl);
    if (s->ssl == NULL || SSL_set_fd(s->ssl, s->fd) != 1)
        goto fail;
    SSL_set_app_data(s->ssl, &s->id);
    (void)SSL_set_tlsext_host_name(s->ssl, expected_cn);
    rc = ssl_blocking(s, 0, NULL, 0, deadline);
    if (rc < 0)
        goto fail;
    rc = PK_ERR_AUTH;
    if (!s->id.cn_ok)
        goto fail;
    *out = s;
    return PK_OK;
fail:
    if (s->ssl != NULL)
        SSL_free(s->ssl);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
    return rc;
}

int pk_tls_client_exchange(pk_tls_session_t *s, const void *req, size_t req_len, uint8_t *resp,
                           size_t cap, size_t *resp_len, uint32_t timeout_ms)
{
    uint64_t deadline = pk_now_mono_ms() + timeout_ms;
    uint8_t hdr[4];
    int rc;

    *resp_len = 0;
    if (s->broken)
        return PK_ERR_STATE;
    if ((req_len > 0 && req == NULL) || (cap > 0 && resp == NULL))
        return PK_ERR_INVAL;
    if (req_len > s->ctx->max_frame)
        return PK_ERR_LIMIT;
    s->broken = 1; /* until the exchange completes */
    uint8_t *frame = malloc(4 + req_len);
    if (frame == NULL)
        return PK_ERR_NOMEM;
    frame[0] = (uint8_t)(req_len >> 24);
    frame[1] = (uint8_t)(req_len >> 16);
    frame[2] = (uint8_t)(req_len >> 8);
    frame[3] = (uint8_t)req_len;
    if (req_len > 0)
        memcpy(frame + 4, req, req_len);
    rc = ssl_full(s, 2, frame, 4 + req_len, deadline);
    free(frame);
    if (rc == PK_ERR_IO) {
        /* In TLS 1.3 a server rejects our certificate after our handshake
         * is done: its alert may be waiting behind the failed write. */
        uint64_t soon = pk_now_mono_ms() + 100;
        int why = ssl_full(s, 1, hdr, 4, soon < deadline ? soon : deadline);
        if (why == PK_ERR_AUTH || why == PK_ERR_VERSION)
            rc = why;
    }
    if (rc != PK_OK)
        return rc;
    rc = ssl_full(s, 1, hdr, 4, deadline);
    if (rc != PK_OK)
        return rc;
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (len > s->ctx->max_frame)
        return PK_ERR_LIMIT;
    if (len > cap)
        return PK_ERR_SPACE;
    rc = ssl_full(s, 1, resp, len, deadline);
    if (rc != PK_OK)
        return rc;
    *resp_len = len;
    s->broken = 0;
    return PK_OK;
}

const char *pk_tls_session_peer_cn(const pk_tls_session_t *s)
{
    return s->id.cn;
}

void pk_tls_client_close(pk_tls_session_t *s)
{
    if (s == NULL)
        return;
    if (!s->broken) {
        ERR_clear_error();
        (void)SSL_shutdown(s->ssl);
    }
    ERR_clear_error();
    SSL_free(s->ssl);
    close(s->fd);
    free(s);
}

int pk_tls_client_call(pk_tls_ctx_t *ctx, const char *addr, const char *expected_cn,
                       const void *req, size_t req_len, uint8_t *resp, size_t cap, size_t *resp_len,
                       uint32_t timeout_ms)
{
    pk_tls_session_t *s = NULL;
    uint64_t start = pk_now_mono_ms();

    *resp_len = 0;
    if (req_len > ctx->max_frame)
        return PK_ERR_LIMIT; /* before connecting: nothing to send */
    int rc = pk_tls_client_open(ctx, addr, expected_cn, timeout_ms, &s);
    if (rc != PK_OK)
        return rc;
    uint64_t spent = pk_now_mono_ms() - start;
    uint32_t left = spent >= timeout_ms ? 1 : (uint32_t)(timeout_ms - spent);
    rc = pk_tls_client_exchange(s, req, req_len, resp, cap, resp_len, left);
    pk_tls_client_close(s);
    return rc;
}
