/*
 * The simulator framework: event heap, virtual network, processes, trace.
 * See sim.h.
 */
#include "proto/sim/sim.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct proc {
    uint32_t gen;
    uint8_t up, cls, group;
} proc_t;

typedef struct counter {
    const char *name;
    uint64_t v;
    int msg;
} counter_t;

struct pk_sim {
    pk_sim_cfg_t cfg;
    pk_sim_ops_t ops;
    void *ctx;
    uint64_t now, seq;
    pk_sim_rng_t net;
    pk_sim_link_t link[PK_SIM_CLASSES][PK_SIM_CLASSES];
    proc_t *proc;
    pk_sim_ev_t *heap;
    size_t n, cap;
    uint64_t hash;
    counter_t ctr[PK_SIM_COUNTERS + 1];
    unsigned nctr;
    uint64_t failures;
    char first_fail[256];
    pk_sim_stats_t st;
    int partitioned;
    int progress_pct;
    uint64_t run_from, run_until;
};

/* ---------------- RNG: SplitMix64 -> xoshiro256** ---------------- */

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void pk_sim_rng_seed(pk_sim_rng_t *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xd1342543de82ef95ull);
    (void)splitmix(&x);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix(&x);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t pk_sim_rng_next(pk_sim_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

uint64_t pk_sim_rng_below(pk_sim_rng_t *r, uint64_t n)
{
    if (n <= 1)
        return 0;
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    for (;;) { /* expected < 2 rounds; terminates with probability 1 */
        uint64_t x = pk_sim_rng_next(r);
        if (x < lim)
            return x % n;
    }
}

int pk_sim_rng_ppm(pk_sim_rng_t *r, uint32_t ppm)
{
    if (ppm == 0)
        return 0;
    return pk_sim_rng_below(r, 1000000) < ppm;
}

void pk_sim_rng_bytes(pk_sim_rng_t *r, uint8_t *buf, size_t n)
{
    while (n >= 8) {
        uint64_t x = pk_sim_rng_next(r);
        memcpy(buf, &x, 8);
        buf += 8;
        n -= 8;
    }
    if (n) {
        uint64_t x = pk_sim_rng_next(r);
        memcpy(buf, &x, n);
    }
}

static int rng_fill(void *ctx, uint8_t *buf, size_t n)
{
    pk_sim_rng_bytes(ctx, buf, n);
    return PK_OK;
}

pk_rng_t pk_sim_rng_as_pk(pk_sim_rng_t *r)
{
    pk_rng_t g = {rng_fill, r};
    return g;
}

uint32_t pk_sim_ppm(double p)
{
    if (!(p > 0))
        return 0;
    if (p >= 1)
        return 1000000;
    return (uint32_t)(p * 1e6 + 0.5);
}

/* ---------------- heap ordered by (t, seq) ---------------- */

static int ev_less(const pk_sim_ev_t *a, const pk_sim_ev_t *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static int heap_push(pk_sim_t *s, pk_sim_ev_t *ev)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 1024;
        pk_sim_ev_t *h = realloc(s->heap, nc * sizeof *h);
        if (!h)
            return PK_ERR_NOMEM;
        s->heap = h;
        s->cap = nc;
    }
    ev->seq = s->seq++;
    size_t i = s->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(ev, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = *ev;
    if (s->n > s->st.peak_queue)
        s->st.peak_queue = s->n;
    return PK_OK;
}

static void heap_pop(pk_sim_t *s, pk_sim_ev_t *out)
{
    *out = s->heap[0];
    pk_sim_ev_t last = s->heap[--s->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l >= s->n)
            break;
        m = l;
        if (l + 1 < s->n && ev_less(&s->heap[l + 1], &s->heap[l]))
            m = l + 1;
        if (!ev_less(&s->heap[m], &last))
            break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (s->n)
        s->heap[i] = last;
}

/* ---------------- world ---------------- */

int pk_sim_new(pk_sim_t **out, const pk_sim_cfg_t *cfg, const pk_sim_link_t *link,
               const pk_sim_ops_t *ops, void *ctx)
{
    static const pk_sim_link_t perfect = {0, 0, 0, 1, 1, 0};
    if (!out || !cfg || !ops || !ops->dispatch || cfg->nproc == 0)
        return PK_ERR_INVAL;
    pk_sim_t *s = calloc(1, sizeof *s);
    if (!s)
        return PK_ERR_NOMEM;
    s->proc = calloc(cfg->nproc, sizeof *s->proc);
    if (!s->proc) {
        free(s);
        return PK_ERR_NOMEM;
    }
    s->cfg = *cfg;
    if (s->cfg.max_events == 0)
        s->cfg.max_events = UINT64_MAX;
    s->ops = *ops;
    s->ctx = ctx;
    s->hash = 0xcbf29ce484222325ull;
    s->progress_pct = -1;
    pk_sim_rng_seed(&s->net, cfg->seed, 0);
    for (uint32_t i = 0; i < cfg->nproc; i++)
        s->proc[i].up = 1;
    pk_sim_set_all_links(s, link ? link : &perfect);
    *out = s;
    return PK_OK;
}

void pk_sim_free(pk_sim_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->heap[i].data);
    free(s->heap);
    free(s->proc);
    free(s);
}

uint64_t pk_sim_now(const pk_sim_t *s)
{
    return s->now;
}

uint64_t pk_sim_seed(const pk_sim_t *s)
{
    return s->cfg.seed;
}

void pk_sim_set_class(pk_sim_t *s, uint32_t proc, uint8_t cls)
{
    if (proc < s->cfg.nproc && cls < PK_SIM_CLASSES)
        s->proc[proc].cls = cls;
}

void pk_sim_set_link(pk_sim_t *s, uint8_t from, uint8_t to, const pk_sim_link_t *l)
{
    if (from < PK_SIM_CLASSES && to < PK_SIM_CLASSES) {
        s->link[from][to] = *l;
        if (s->link[from][to].delay_max_ms < s->link[from][to].delay_min_ms)
            s->link[from][to].delay_max_ms = s->link[from][to].delay_min_ms;
    }
}

void pk_sim_set_all_links(pk_sim_t *s, const pk_sim_link_t *l)
{
    for (uint8_t a = 0; a < PK_SIM_CLASSES; a++)
        for (uint8_t b = 0; b < PK_SIM_CLASSES; b++)
            pk_sim_set_link(s, a, b, l);
}

/* ---------------- trace ---------------- */

static void trace_bytes(pk_sim_t *s, const char *p, size_t n)
{
    uint64_t h = s->hash;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 0x100000001b3ull;
    }
    s->hash = h;
    if (s->cfg.trace)
        fwrite(p, 1, n, s->cfg.trace);
}

__attribute__((format(printf, 2, 0))) static void vtrace(pk_sim_t *s, const char *fmt, va_list ap)
{
    char line[512];
    int a = snprintf(line, sizeof line, "t=%" PRIu64 " ", s->now);
    int b = vsnprintf(line + a, sizeof line - (size_t)a - 1, fmt, ap);
    if (b < 0)
        b = 0;
    size_t n = (size_t)a + (size_t)b;
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    trace_bytes(s, line, n);
}

void pk_sim_trace(pk_sim_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vtrace(s, fmt, ap);
    va_end(ap);
}

uint64_t pk_sim_trace_hash(const pk_sim_t *s)
{
    return s->hash;
}

/* ---------------- counters and failures ---------------- */

uint16_t pk_sim_counter(pk_sim_t *s, const char *name, int msg)
{
    for (unsigned i = 1; i <= s->nctr; i++)
        if (strcmp(s->ctr[i].name, name) == 0)
            return (uint16_t)i;
    if (s->nctr >= PK_SIM_COUNTERS)
        return 0;
    s->nctr++;
    s->ctr[s->nctr].name = name;
    s->ctr[s->nctr].msg = msg;
    return (uint16_t)s->nctr;
}

void pk_sim_count(pk_sim_t *s, uint16_t id, uint64_t n)
{
    if (id >= 1 && id <= s->nctr)
        s->ctr[id].v += n;
}

uint64_t pk_sim_counter_get(const pk_sim_t *s, const char *name)
{
    for (unsigned i = 1; i <= s->nctr; i++)
        if (strcmp(s->ctr[i].name, name) == 0)
            return s->ctr[i].v;
    return 0;
}

static const char *ctr_name(const pk_sim_t *s, uint16_t id)
{
    return id >= 1 && id <= s->nctr ? s->ctr[id].name : "?";
}

void pk_sim_fail(pk_sim_t *s, const char *fmt, ...)
{
    char msg[240];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->failures++ == 0)
        snprintf(s->first_fail, sizeof s->first_fail, "t=%" PRIu64 " %s", s->now, msg);
    pk_sim_trace(s, "FAIL %s", msg);
}

uint64_t pk_sim_failures(const pk_sim_t *s)
{
    return s->failures;
}

const char *pk_sim_first_failure(const pk_sim_t *s)
{
    return s->first_fail;
}

void pk_sim_stats(const pk_sim_t *s, pk_sim_stats_t *st)
{
    *st = s->st;
}

/* ---------------- network ---------------- */

int pk_sim_send(pk_sim_t *s, uint32_t src, uint32_t dst, uint16_t code, const uint8_t *data,
                size_t len)
{
    if (src >= s->cfg.nproc || dst >= s->cfg.nproc || len > UINT32_MAX)
        return PK_ERR_INVAL;
    if (!s->proc[src].up)
        abort(); /* a down process cannot send: scenario bug */
    const pk_sim_link_t *l = &s->link[s->proc[src].cls][s->proc[dst].cls];
    pk_sim_count(s, code, 1);
    s->st.sent++;
    int copies = 1 + pk_sim_rng_ppm(&s->net, l->dup_ppm);
    if (copies > 1)
        s->st.duplicated++;
    for (int c = 0; c < copies; c++) {
        if (pk_sim_rng_ppm(&s->net, l->loss_ppm)) {
            s->st.lost++;
            pk_sim_trace(s, "lost %u>%u %s len=%zu", src, dst, ctr_name(s, code), len);
            continue;
        }
        uint64_t d = l->delay_min_ms +
                     pk_sim_rng_below(&s->net, (uint64_t)l->delay_max_ms - l->delay_min_ms + 1);
        if (l->reorder_ms && pk_sim_rng_ppm(&s->net, l->reorder_ppm)) {
            d += pk_sim_rng_below(&s->net, l->reorder_ms);
            s->st.reordered++;
        }
        pk_sim_ev_t ev = {0};
        ev.t = s->now + d;
        ev.kind = PK_SIM_EV_MSG;
        ev.src = src;
        ev.dst = dst;
        ev.code = code;
        ev.len = (uint32_t)len;
        ev.data = malloc(len ? len : 1);
        if (!ev.data)
            return PK_ERR_NOMEM;
        if (len)
            memcpy(ev.data, data, len);
        int rc = heap_push(s, &ev);
        if (rc != PK_OK) {
            free(ev.data);
            return rc;
        }
    }
    return PK_OK;
}

void pk_sim_partition(pk_sim_t *s, uint32_t proc, uint8_t g)
{
    if (proc < s->cfg.nproc) {
        s->proc[proc].group = g;
        if (g)
            s->partitioned = 1;
    }
}

void pk_sim_heal(pk_sim_t *s)
{
    if (!s->partitioned)
        return;
    for (uint32_t i = 0; i < s->cfg.nproc; i++)
        s->proc[i].group = 0;
    s->partitioned = 0;
    pk_sim_trace(s, "heal");
}

/* ---------------- timers, processes ---------------- */

int pk_sim_timer(pk_sim_t *s, uint32_t proc, uint64_t t, uint64_t arg)
{
    if (proc >= s->cfg.nproc)
        return PK_ERR_INVAL;
    pk_sim_ev_t ev = {0};
    ev.t = t < s->now ? s->now : t;
    ev.kind = PK_SIM_EV_TIMER;
    ev.dst = proc;
    ev.gen = s->proc[proc].gen;
    ev.arg = arg;
    return heap_push(s, &ev);
}

int pk_sim_at(pk_sim_t *s, uint64_t t, uint32_t kind, uint32_t proc, uint64_t arg)
{
    if (kind < PK_SIM_EV_USER)
        return PK_ERR_INVAL;
    pk_sim_ev_t ev = {0};
    ev.t = t < s->now ? s->now : t;
    ev.kind = kind;
    ev.dst = proc;
    ev.gen = proc < s->cfg.nproc ? s->proc[proc].gen : 0;
    ev.arg = arg;
    return heap_push(s, &ev);
}

int pk_sim_up(const pk_sim_t *s, uint32_t proc)
{
    return proc < s->cfg.nproc && s->proc[proc].up;
}

uint32_t pk_sim_gen(const pk_sim_t *s, uint32_t proc)
{
    return proc < s->cfg.nproc ? s->proc[proc].gen : 0;
}

void pk_sim_crash(pk_sim_t *s, uint32_t proc, uint64_t down_ms)
{
    if (proc >= s->cfg.nproc || !s->proc[proc].up)
        return;
    s->proc[proc].up = 0;
    s->proc[proc].gen++;
    s->st.crashes++;
    pk_sim_trace(s, "crash %u down_ms=%" PRIu64, proc, down_ms);
    if (s->ops.crash)
        s->ops.crash(s->ctx, s, proc);
    pk_sim_ev_t ev = {0};
    ev.t = s->now + (down_ms ? down_ms : 1);
    ev.kind = PK_SIM_EV_RESTART;
    ev.dst = proc;
    ev.gen = s->proc[proc].gen;
    if (heap_push(s, &ev) != PK_OK)
        abort(); /* cannot lose a restart: out of memory in the simulator */
}

/* ---------------- run ---------------- */

static void progress(pk_sim_t *s, int force)
{
    if (!s->cfg.progress || s->run_until <= s->run_from)
        return;
    int pct = (int)((s->now - s->run_from) * 100 / (s->run_until - s->run_from));
    if (pct > 100)
        pct = 100;
    if (!force && pct == s->progress_pct)
        return;
    s->progress_pct = pct;
    char bar[41];
    int fill = pct * 40 / 100;
    for (int i = 0; i < 40; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[40] = 0;
    fprintf(stderr, "\r%-12s [%s] %3d%% t=%" PRIu64 "s events=%" PRIu64 "%s",
            s->cfg.label ? s->cfg.label : "sim", bar, pct, s->now / 1000, s->st.events,
            force ? "\n" : "");
    fflush(stderr);
}

int pk_sim_run(pk_sim_t *s, uint64_t until)
{
    int rc = PK_OK;
    s->run_from = s->now;
    s->run_until = until;
    s->progress_pct = -1;
    while (s->n > 0 && s->heap[0].t <= until) {
        if (s->st.events >= s->cfg.max_events) {
            rc = PK_ERR_LIMIT;
            break;
        }
        pk_sim_ev_t ev;
        heap_pop(s, &ev);
        s->now = ev.t;
        s->st.events++;
        proc_t *p = ev.dst < s->cfg.nproc ? &s->proc[ev.dst] : NULL;
        switch (ev.kind) {
        case PK_SIM_EV_MSG:
            if (!p->up) {
                s->st.to_down++;
                pk_sim_trace(s, "down %u>%u %s", ev.src, ev.dst, ctr_name(s, ev.code));
            } else if (s->proc[ev.src].group != p->group) {
                s->st.cut++;
                pk_sim_trace(s, "cut %u>%u %s", ev.src, ev.dst, ctr_name(s, ev.code));
            } else {
                s->st.delivered++;
                pk_sim_trace(s, "recv %u>%u %s len=%u", ev.src, ev.dst, ctr_name(s, ev.code),
                             ev.len);
                s->ops.dispatch(s->ctx, s, &ev);
            }
            free(ev.data);
            break;
        case PK_SIM_EV_TIMER:
            if (!p->up || p->gen != ev.gen)
                s->st.stale_timers++;
            else
                s->ops.dispatch(s->ctx, s, &ev);
            break;
        case PK_SIM_EV_RESTART:
            if (!p->up && p->gen == ev.gen) {
                p->up = 1;
                s->st.restarts++;
                pk_sim_trace(s, "restart %u", ev.dst);
                if (s->ops.restart)
                    s->ops.restart(s->ctx, s, ev.dst);
            }
            break;
        default: s->ops.dispatch(s->ctx, s, &ev); break;
        }
        if (s->cfg.progress && (s->st.events & 0x3ff) == 0)
            progress(s, 0);
    }
    if (rc == PK_OK && s->now < until)
        s->now = until;
    progress(s, 1);
    return rc;
}

/* ---------------- summary ---------------- */

void pk_sim_summary(const pk_sim_t *s, FILE *f, int json)
{
    const pk_sim_stats_t *st = &s->st;
    if (json) {
        fprintf(f,
                "{\"seed\":%" PRIu64 ",\"virtual_ms\":%" PRIu64 ",\"events\":%" PRIu64
                ",\"sent\":%" PRIu64 ",\"delivered\":%" PRIu64 ",\"lost\":%" PRIu64
                ",\"duplicated\":%" PRIu64 ",\"reordered\":%" PRIu64 ",\"cut\":%" PRIu64
                ",\"to_down\":%" PRIu64 ",\"crashes\":%" PRIu64 ",\"restarts\":%" PRIu64
                ",\"peak_queue\":%zu,\"counters\":{",
                s->cfg.seed, s->now, st->events, st->sent, st->delivered, st->lost, st->duplicated,
                st->reordered, st->cut, st->to_down, st->crashes, st->restarts, st->peak_queue);
        for (unsigned i = 1; i <= s->nctr; i++)
            fprintf(f, "%s\"%s%s\":%" PRIu64, i > 1 ? "," : "", s->ctr[i].msg ? "msg." : "",
                    s->ctr[i].name, s->ctr[i].v);
        fprintf(f, "},\"failures\":%" PRIu64 ",\"trace_hash\":\"%016" PRIx64 "\"}\n", s->failures,
                s->hash);
        return;
    }
    fprintf(f,
            "  virtual time   %" PRIu64 ".%03" PRIu64 " s, %" PRIu64 " events (peak queue %zu)\n",
            s->now / 1000, s->now % 1000, st->events, st->peak_queue);
    fprintf(f,
            "  network        sent %" PRIu64 ", delivered %" PRIu64 ", lost %" PRIu64
            ", duplicated %" PRIu64 ", reordered %" PRIu64 ", cut by partition %" PRIu64
            ", to a down process %" PRIu64 "\n",
            st->sent, st->delivered, st->lost, st->duplicated, st->reordered, st->cut, st->to_down);
    fprintf(f, "  messages       ");
    int first = 1;
    for (unsigned i = 1; i <= s->nctr; i++)
        if (s->ctr[i].msg) {
            fprintf(f, "%s%s %" PRIu64, first ? "" : ", ", s->ctr[i].name, s->ctr[i].v);
            first = 0;
        }
    fprintf(f, "\n");
    for (unsigned i = 1; i <= s->nctr; i++)
        if (!s->ctr[i].msg)
            fprintf(f, "  %-30s %" PRIu64 "\n", s->ctr[i].name, s->ctr[i].v);
    fprintf(f, "  crashes        %" PRIu64 ", restarts %" PRIu64 "\n", st->crashes, st->restarts);
    fprintf(f, "  invariants     %s (%" PRIu64 " failures)%s%s\n", s->failures ? "BROKEN" : "hold",
            s->failures, s->failures ? ": first " : "", s->first_fail);
    fprintf(f, "  trace hash     %016" PRIx64 "\n", s->hash);
}
