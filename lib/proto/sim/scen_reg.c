/*
 * Scenario "reg": registration and direct links, option 1 and option 2,
 * across two serving nodes and one kms, all real cores:
 *
 *   proc 0       kms    pk_kms_t over a memory: store (durable: devices,
 *                       allowed pairs, root keys, pool, allocations, audit;
 *                       soft: the core and its caches)
 *   proc 1, 2    nodes  pk_node_t (soft state only: a restarted node has no
 *                       contexts and its devices register again)
 *   proc 3..     devices pk_reg_dev_t + pk_link_t, allocated only while a
 *                       device is busy (about 5 kB); an idle or finished
 *                       device keeps 32 bytes
 *
 * Devices come in allowed pairs (2i, 2i+1); the even one initiates. Pairs
 * alternate between option 1 (mode pairs: the root key arrives with the
 * registration, the link needs no network message) and option 2 (mode pool:
 * LINK_REQ -> node -> kms directory/allocation -> NODE_LINK_IND -> LINK_IND
 * to both). Three pairs in four have their devices on different nodes.
 * Option-2 initiators first ask once for a link with a device outside their
 * allowed list, which must be refused.
 *
 * node<->kms and node<->node are TLS connections: reliable and in order
 * (constant delay), each frame tagged with its connection's epoch so that
 * nothing from before a crash or reconnect is ever delivered to the next
 * connection. device<->node and device<->device are UDP: loss, dup, reorder.
 *
 * The application around the cores (what a device shell does): register;
 * option 1: connect with the pair key's KSI; option 2: LINK_REQ, then connect
 * with the indicated KSI; after ESTABLISHED the initiator pings over the link
 * until the responder's pong comes back; a busy device that makes no
 * progress for 15 s registers again (its node may have lost its context).
 *
 * Invariants: both ends of every established link hold the same PIK and
 * exchanged records; no device is given a key for a pair outside its
 * allowed list, nor indicated one; no KSI goes to two pairs; at the end every
 * pair has an established, verified link.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/out.h"
#include "proto/kms/kms.h"
#include "proto/link/link.h"
#include "proto/node/node.h"
#include "proto/reg/reg.h"
#include "proto/sim/scen.h"
#include "proto/sim/sim.h"
#include "store/store.h"

enum { P_KMS = 0, P_N0 = 1, P_N1 = 2, P_DEV0 = 3 };
enum { EV_CHAOS = PK_SIM_EV_USER, EV_BOOT, EV_QUIET };
enum { PH_IDLE = 0, PH_REG = 1, PH_READY = 2, PH_DONE = 3 };

#define SPREAD_MS     60000ull
#define CHAOS_MS      90000ull
#define QUIET_MS      150000ull
#define STUCK_MS      15000ull /* a busy initiator without progress registers again */
#define RESP_REREG_MS 30000ull /* a waiting responder refreshes its registration */
#define PING_MS       1000ull
#define LINKWAIT_MS   4000ull
#define EPOCH_LEN     4

typedef struct active {
    pk_reg_dev_t reg;
    pk_reg_key_t *store; /* crowd members: a key store for the whole set */
    pk_link_t link;
    uint8_t link_on, established, intruder_asked;
    uint64_t armed;
    uint64_t app_at;      /* next application step */
    uint64_t progress_at; /* last progress (registered, link step) */
    uint64_t dcr_hash;    /* responder: the DCR its link took */
} active_t;

typedef struct dstate {
    active_t *a;
    uint8_t phase, node, mode;
    uint8_t registered_once;
    uint32_t regs; /* registrations completed */
} dstate_t;

typedef struct world {
    pk_sim_t *sim;
    const pk_sim_opts_t *o;
    uint32_t n, crash_ppm;
    pk_sim_rng_t chaos, kr, nr, dr;
    pk_rng_t kms_rng, node_rng, dev_rng;
    pk_store_t *st;
    uint8_t kek[PK_WRAP_KEK_LEN];
    pk_kms_t *kms;
    int kms_cp; /* crash before the audit flush at the next request */
    pk_node_t *node[2];
    uint64_t node_armed[2];
    uint32_t kconn[2]; /* epoch of node i's kms connection */
    uint32_t nconn;    /* epoch of the node-node connection */
    dstate_t *ds;
    uint32_t *ksi_pair; /* KSI -> pair index + 1 */
    size_t nksi;
    size_t active, peak_active;
    int quiet;
    uint16_t m_type[256];
    uint16_t c_reg, c_links1, c_links2, c_sig1, c_sig2, c_regmsgs, c_rereg, c_rej, c_denied,
        c_linkfail, c_kms_busy, c_kms_defer, c_kms_cp_made, c_stalled, c_crowd_keys;
    uint32_t crowd_n;     /* opts.crowd in whole pairs, <= n */
    uint32_t crowd_pairs; /* crowd members in mode pairs */
    uint8_t arena[16384];
    uint8_t resp[PK_KMS_RESP_MAX + EPOCH_LEN];
    uint8_t frame[PK_REG_NET_MAX + EPOCH_LEN + 64];
} world_t;

/* ---------------- names ---------------- */

static pk_reg_id_t dev_id(uint32_t d)
{
    char s[16];
    pk_reg_id_t id;
    int n = snprintf(s, sizeof s, "d%06u", d);
    pk_reg_id_set(&id, s, (size_t)n);
    return id;
}

static uint32_t dev_of_id(const world_t *w, const uint8_t *b, size_t len)
{
    if (len != 7 || b[0] != 'd')
        return UINT32_MAX;
    uint32_t v = 0;
    for (size_t i = 1; i < 7; i++) {
        if (b[i] < '0' || b[i] > '9')
            return UINT32_MAX;
        v = v * 10 + (uint32_t)(b[i] - '0');
    }
    return v < w->n ? v : UINT32_MAX;
}

static const char *node_name(int i)
{
    return i ? "node-b" : "node-a";
}

static pk_reg_id_t node_id(int i)
{
    pk_reg_id_t id;
    pk_reg_id_set(&id, node_name(i), 6);
    return id;
}

static void dev_key(const world_t *w, uint32_t d, uint8_t k[16])
{
    pk_sim_rng_t r;
    pk_sim_rng_seed(&r, w->o->seed, 0x10000000ull + d);
    pk_sim_rng_bytes(&r, k, 16);
    pk_wipe(&r, sizeof r);
}

static uint32_t pair_of(uint32_t d)
{
    return d / 2;
}

static uint32_t partner_of(const world_t *w, uint32_t d)
{
    uint32_t p = d ^ 1u;
    return p < w->n ? p : UINT32_MAX;
}

/* The crowd (opts.crowd): the option-1 devices among [0, crowd_n) are one
 * group (option-2 devices keep their partner only: the scenario's
 * outside-list probes stay outside). */
static int in_crowd(const world_t *w, uint32_t d)
{
    return d < w->crowd_n && w->ds[d].mode == PK_REG_MODE_PAIRS;
}

static int allowed(const world_t *w, uint32_t a, uint32_t b)
{
    return a != UINT32_MAX && b != UINT32_MAX && a != b &&
           (partner_of(w, a) == b || (in_crowd(w, a) && in_crowd(w, b)));
}

/* Option by pair: option 2 for opts.pool_pct percent of the pairs (spread
 * evenly: pair p is option 2 when (p * 37) % 100 < pct), option 1 for the
 * rest. The default 50 makes it every other pair. */
static uint8_t mode_of(const world_t *w, uint32_t d)
{
    uint32_t pct = w->o->pool_pct > 100 ? 50 : w->o->pool_pct;
    if (pct == 50)
        return pair_of(d) % 2 ? PK_REG_MODE_POOL : PK_REG_MODE_PAIRS;
    return (pair_of(d) * 37u) % 100u < pct ? PK_REG_MODE_POOL : PK_REG_MODE_PAIRS;
}

/* One pair in four has both devices on node a; the others straddle. */
static uint8_t node_of(uint32_t d)
{
    return pair_of(d) % 4 == 0 ? 0 : (uint8_t)(d % 2);
}

static uint16_t mtype(world_t *w, uint8_t t)
{
    static const char *const names[256] = {
        [PK_REG_T_REQUEST] = "REQUEST",
        [PK_REG_T_CHALLENGE] = "CHALLENGE",
        [PK_REG_T_RESPONSE] = "RESPONSE",
        [PK_REG_T_ACCEPT] = "ACCEPT",
        [PK_REG_T_LINK_REQ] = "LINK_REQ",
        [PK_REG_T_LINK_IND] = "LINK_IND",
        [PK_REG_T_LINK_REJ] = "LINK_REJ",
        [PK_REG_T_KEYS_REQ] = "KEYS_REQ",
        [PK_REG_T_KEYS] = "KEYS",
        [PK_LINK_T_DCR] = "DCR",
        [PK_LINK_T_SMC] = "SMC",
        [PK_LINK_T_SMCOMPLETE] = "SMCOMPLETE",
        [PK_LINK_T_DATA] = "LINK_DATA",
        [PK_REG_T_KMS_VEC_REQ] = "KMS_VEC_REQ",
        [PK_REG_T_KMS_VEC_RESP] = "KMS_VEC_RESP",
        [PK_REG_T_KMS_KEYS_REQ] = "KMS_KEYS_REQ",
        [PK_REG_T_KMS_KEYS_RESP] = "KMS_KEYS_RESP",
        [PK_REG_T_KMS_ALLOC_REQ] = "KMS_ALLOC_REQ",
        [PK_REG_T_KMS_ALLOC_RESP] = "KMS_ALLOC_RESP",
        [PK_KMS_T_DIR_REQ] = "KMS_DIR_REQ",
        [PK_KMS_T_DIR_RESP] = "KMS_DIR_RESP",
        [PK_KMS_T_ERR] = "KMS_ERR",
        [PK_REG_T_NODE_LINK_IND] = "NODE_LINK_IND",
    };
    if (!w->m_type[t])
        w->m_type[t] = pk_sim_counter(w->sim, names[t] ? names[t] : "OTHER", 1);
    return w->m_type[t];
}

/* Link signalling: the network messages that exist only to set up a link. */
static int is_link_signalling(uint8_t t)
{
    return t == PK_REG_T_LINK_REQ || t == PK_REG_T_LINK_IND || t == PK_REG_T_LINK_REJ ||
           t == PK_REG_T_KMS_ALLOC_REQ || t == PK_REG_T_KMS_ALLOC_RESP || t == PK_KMS_T_DIR_REQ ||
           t == PK_KMS_T_DIR_RESP || t == PK_REG_T_NODE_LINK_IND;
}

static int is_reg_msg(uint8_t t)
{
    return (t >= PK_REG_T_REQUEST && t <= PK_REG_T_ACCEPT) || t == PK_REG_T_KEYS_REQ ||
           t == PK_REG_T_KEYS || (t >= PK_REG_T_KMS_VEC_REQ && t <= PK_REG_T_KMS_KEYS_RESP);
}

/* Counts a device<->node message of type t as link signalling: every
 * LINK_* message (option 2), and for an option-1 device any message with its
 * node after registration that is not a registration retransmission. */
static void count_sig(world_t *w, uint32_t d, uint8_t t)
{
    if (is_link_signalling(t))
        pk_sim_count(w->sim, w->c_sig2, 1);
    else if (w->ds[d].mode == PK_REG_MODE_PAIRS && w->ds[d].phase == PH_READY && !is_reg_msg(t))
        pk_sim_count(w->sim, w->c_sig1, 1);
}

/* ---------------- KSI ledger ---------------- */

static void ksi_note(world_t *w, uint32_t ksi, uint32_t pair, const char *how)
{
    if (ksi >= w->nksi) {
        size_t nn = w->nksi ? w->nksi : 1024;
        while (nn <= ksi)
            nn *= 2;
        uint32_t *p = realloc(w->ksi_pair, nn * sizeof *p);
        if (!p)
            abort();
        memset(p + w->nksi, 0, (nn - w->nksi) * sizeof *p);
        w->ksi_pair = p;
        w->nksi = nn;
    }
    if (w->ksi_pair[ksi] == 0)
        w->ksi_pair[ksi] = pair + 1;
    else if (w->ksi_pair[ksi] != pair + 1)
        pk_sim_fail(w->sim, "KSI %u given to pair %u (%s) and pair %u", ksi, pair, how,
                    w->ksi_pair[ksi] - 1);
}

/* ---------------- TLS-like frames ---------------- */

static void tls_send(world_t *w, uint32_t from, uint32_t to, uint32_t epoch, const uint8_t *b,
                     size_t len)
{
    if (len + EPOCH_LEN > sizeof w->frame)
        abort();
    pk_put_u32(w->frame, epoch);
    memcpy(w->frame + EPOCH_LEN, b, len);
    uint8_t t = len ? b[0] : 0;
    if (is_link_signalling(t))
        pk_sim_count(w->sim, w->c_sig2, 1);
    pk_sim_send(w->sim, from, to, mtype(w, t), w->frame, len + EPOCH_LEN);
}

static void node_arm(world_t *w, int i);
static void node_flush(world_t *w, int i, pk_out_t *out);

static void kms_up_node(world_t *w, int i)
{
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    size_t left = pk_node_kms_up(w->node[i], pk_sim_now(w->sim), &out);
    node_flush(w, i, &out);
    for (unsigned k = 0; left > 0 && k < 100000; k++) {
        pk_out_init(&out, w->arena, sizeof w->arena);
        size_t before = left;
        left = pk_node_kms_up(w->node[i], pk_sim_now(w->sim), &out);
        node_flush(w, i, &out);
        if (left >= before && out.n == 0)
            break;
    }
}

/* Node i's kms connection closes; it reopens at once when both ends are up. */
static void reconnect(world_t *w, int i)
{
    w->kconn[i]++;
    if (!w->node[i])
        return;
    pk_node_kms_down(w->node[i]);
    if (w->kms)
        kms_up_node(w, i);
    node_arm(w, i);
}

/* ---------------- kms ---------------- */

static void kms_start(world_t *w)
{
    /* group_writes as in kms serve: first registrations' writes are intents
     * committed by the flush after the request (kms_input) */
    pk_kms_cfg_t kc = {.store = w->st, .kek = w->kek, .rng = &w->kms_rng, .group_writes = 1};
    if (pk_kms_new(&kc, &w->kms) != PK_OK)
        abort();
}

/* One kms request, handled the way kms serve does with group_writes: a
 * first registration is deferred (PK_KMS_DEFER: its root keys and directory
 * entry become write intents in the open batch), the batch commits, and the
 * request is handled again and answered from the committed rows, its audit
 * records in the next batch; after PK_KMS_DEFER_TRIES deferrals, BUSY. Every
 * answer leaves only after the flush holding its audit record. A planned
 * crash (kms_cp) strikes before one of those flushes: for a deferred request
 * either before its intents commit (nothing created) or after (root keys made
 * but never answered: the retry must read back the same keys). */
static void kms_input(world_t *w, const pk_sim_ev_t *ev)
{
    int i = ev->src == P_N0 ? 0 : 1;
    if (ev->len < EPOCH_LEN || pk_get_u32(ev->data) != w->kconn[i])
        return; /* a frame of a closed connection */
    size_t rl = 0;
    const uint8_t *req = ev->data + EPOCH_LEN;
    size_t len = ev->len - EPOCH_LEN;
    for (unsigned tries = 0;; tries++) {
        rl = 0;
        int rc = pk_kms_handle(w->kms, node_name(i), req, len, pk_sim_now(w->sim), w->resp,
                               sizeof w->resp, &rl);
        if (w->kms_cp && (rc != PK_KMS_DEFER || pk_sim_rng_below(&w->chaos, 2))) {
            /* crash before the batch commits: the answer must not leave */
            w->kms_cp = 0;
            if (tries > 0)
                pk_sim_count(w->sim, w->c_kms_cp_made, 1);
            pk_wipe(w->resp, sizeof w->resp);
            pk_sim_crash(w->sim, P_KMS, 500 + pk_sim_rng_below(&w->chaos, 4500));
            return;
        }
        int frc = pk_kms_flush(w->kms);
        if (frc != PK_OK)
            pk_sim_count(w->sim, w->c_kms_busy, 1);
        if (rc == PK_KMS_DEFER) {
            pk_sim_count(w->sim, w->c_kms_defer, 1);
            if (tries < PK_KMS_DEFER_TRIES)
                continue; /* its batch is done (committed or failed): again */
            frc = PK_ERR_BUSY;
        }
        if (frc != PK_OK)
            rl = pk_kms_err_frame(PK_ERR_BUSY, len ? req[0] : 0, len, w->resp, sizeof w->resp);
        break;
    }
    if (rl)
        tls_send(w, P_KMS, ev->src, w->kconn[i], w->resp, rl);
    pk_wipe(w->resp, sizeof w->resp);
}

/* ---------------- nodes ---------------- */

static void node_start(world_t *w, int i)
{
    /* tables sized to the run (the node allocates them up front) */
    size_t n = w->n;
    pk_node_cfg_t cfg = {.node_id = node_id(i),
                         .rng = &w->node_rng,
                         .max_half = n + 64 < 8192 ? n + 64 : 8192,
                         .max_buckets = n + 64 < 8192 ? n + 64 : 8192,
                         .burst = 8,
                         .per_sec = 4,
                         .half_ttl_ms = 30000,
                         .max_devices = n + 16 < 65535 ? n + 16 : 65535,
                         .max_kms = 4 * n + 64 < 65536 ? 4 * n + 64 : 65536,
                         .kms_timeout_ms = 5000,
                         .max_links = n + 64 < 8192 ? n + 64 : 8192,
                         .max_links_per_dev = 4};
    if (pk_node_new(&cfg, &w->node[i]) != PK_OK)
        abort();
    pk_reg_id_t other = node_id(!i);
    if (pk_node_peer_add(w->node[i], &other) != 0)
        abort(); /* peer index 0 */
    w->node_armed[i] = 0;
}

static void node_flush(world_t *w, int i, pk_out_t *out)
{
    uint32_t self = P_N0 + (uint32_t)i;
    int stalled = 0;
    for (unsigned k = 0; k < out->n; k++) {
        const pk_act_t *a = &out->act[k];
        if (a->kind == PK_ACT_SEND) {
            uint8_t t = (uint8_t)(a->code & 0xFF);
            switch (a->code & PK_NODE_DST_MASK) {
            case PK_NODE_DST_DEVICE: {
                uint32_t dp = (uint32_t)a->dest;
                if (dp < P_DEV0 || dp - P_DEV0 >= w->n)
                    break;
                uint32_t d = dp - P_DEV0;
                count_sig(w, d, t);
                if (is_reg_msg(t))
                    pk_sim_count(w->sim, w->c_regmsgs, 1);
                pk_sim_send(w->sim, self, dp, mtype(w, t), a->data, a->len);
                break;
            }
            case PK_NODE_DST_KMS:
                if (is_reg_msg(t))
                    pk_sim_count(w->sim, w->c_regmsgs, 1);
                tls_send(w, self, P_KMS, w->kconn[i], a->data, a->len);
                break;
            case PK_NODE_DST_NODE:
                tls_send(w, self, P_N0 + (uint32_t)!i, w->nconn, a->data, a->len);
                break;
            default: break;
            }
        } else if (a->kind == PK_ACT_EVENT && a->code == PK_NODE_EV_KMS_STALLED) {
            pk_sim_count(w->sim, w->c_stalled, 1);
            stalled = 1;
        }
    }
    pk_out_reset(out);
    if (stalled)
        reconnect(w, i); /* after the loop: it reuses the arena */
}

/* The nodes' timers run on a fixed 200 ms tick rather than at
 * pk_node_next_deadline(): that call scans the whole half-open table
 * (pk_reg_node_next_deadline is O(max_half)), too slow to make after every
 * datagram at 100,000 devices. The tick starts with the node. */
#define NODE_TICK_MS 200ull

static void node_arm(world_t *w, int i)
{
    if (!w->node[i] || w->node_armed[i] > pk_sim_now(w->sim))
        return;
    w->node_armed[i] = pk_sim_now(w->sim) + NODE_TICK_MS;
    pk_sim_timer(w->sim, P_N0 + (uint32_t)i, w->node_armed[i], 0);
}

static void node_input(world_t *w, const pk_sim_ev_t *ev)
{
    int i = ev->dst == P_N0 ? 0 : 1;
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    uint64_t now = pk_sim_now(w->sim);
    int rc = PK_OK;
    if (ev->src >= P_DEV0) {
        rc = pk_node_device_input(w->node[i], ev->src, ev->data, ev->len, now, &out);
    } else if (ev->src == P_KMS) {
        if (ev->len < EPOCH_LEN || pk_get_u32(ev->data) != w->kconn[i])
            return;
        rc = pk_node_kms_input(w->node[i], ev->data + EPOCH_LEN, ev->len - EPOCH_LEN, now, &out);
        if (rc == PK_ERR_STATE || rc == PK_ERR_MALFORMED) {
            pk_sim_fail(w->sim, "node %d: kms connection out of step (%s)", i, pk_strerror(rc));
            reconnect(w, i);
            return;
        }
    } else {
        if (ev->len < EPOCH_LEN || pk_get_u32(ev->data) != w->nconn)
            return;
        const char *cn = node_name(!i);
        rc = pk_node_peer_input(w->node[i], (const uint8_t *)cn, 6, ev->data + EPOCH_LEN,
                                ev->len - EPOCH_LEN, now, &out);
    }
    (void)rc; /* refusals are counted by the core */
    node_flush(w, i, &out);
}

static void node_timer(world_t *w, int i)
{
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    w->node_armed[i] = 0;
    pk_node_timeout(w->node[i], pk_sim_now(w->sim), &out);
    node_flush(w, i, &out);
    node_arm(w, i);
}

/* ---------------- devices ---------------- */

static void dev_free(world_t *w, uint32_t d)
{
    active_t *a = w->ds[d].a;
    if (!a)
        return;
    pk_reg_dev_clear(&a->reg); /* wipes the store's keys */
    pk_link_clear(&a->link);
    free(a->store);
    pk_wipe(a, sizeof *a);
    free(a);
    w->ds[d].a = NULL;
    w->active--;
}

static void dev_arm(world_t *w, uint32_t d)
{
    active_t *a = w->ds[d].a;
    if (!a)
        return;
    uint64_t t = pk_reg_dev_next_deadline(&a->reg), now = pk_sim_now(w->sim);
    if (a->link_on) {
        uint64_t lt = pk_link_next_deadline(&a->link);
        t = lt < t ? lt : t;
    }
    t = a->app_at < t ? a->app_at : t;
    if (t == UINT64_MAX)
        return;
    if (t <= now)
        t = now + 1;
    if (a->armed && a->armed <= t && a->armed > now)
        return;
    a->armed = t;
    pk_sim_timer(w->sim, P_DEV0 + d, t, 0);
}

static void dev_send(world_t *w, uint32_t d, uint32_t to, const uint8_t *b, size_t len)
{
    uint8_t t = len ? b[0] : 0;
    if (to == P_N0 || to == P_N1) {
        count_sig(w, d, t);
        if (is_reg_msg(t))
            pk_sim_count(w->sim, w->c_regmsgs, 1);
    }
    pk_sim_send(w->sim, P_DEV0 + d, to, mtype(w, t), b, len);
}

static void dev_register(world_t *w, uint32_t d)
{
    dstate_t *s = &w->ds[d];
    uint64_t now = pk_sim_now(w->sim);
    if (!s->a) {
        s->a = calloc(1, sizeof *s->a);
        if (!s->a)
            abort();
        if (++w->active > w->peak_active)
            w->peak_active = w->active;
    } else {
        pk_reg_dev_clear(&s->a->reg); /* keeps its store */
        pk_link_clear(&s->a->link);
        s->a->link_on = 0;
        s->a->established = 0;
    }
    active_t *a = s->a;
    uint8_t k[16];
    dev_key(w, d, k);
    if (in_crowd(w, d) && !a->store && !(a->store = calloc(w->crowd_n, sizeof *a->store)))
        abort();
    pk_reg_dev_cfg_t dc = {.dev_id = dev_id(d),
                           .node_id = node_id(s->node),
                           .k = k,
                           .klen = 16,
                           .rto_ms = 1000,
                           .max_tries = 6,
                           .keys = a->store,
                           .nkeys = a->store ? w->crowd_n : 0};
    int rc = pk_reg_dev_init(&a->reg, &dc);
    pk_wipe(k, sizeof k);
    if (rc != PK_OK)
        abort();
    if (s->registered_once)
        pk_sim_count(w->sim, w->c_rereg, 1);
    s->phase = PH_REG;
    a->progress_at = now;
    a->app_at = now + STUCK_MS;
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    if (pk_reg_dev_start(&a->reg, &w->dev_rng, now, &out) == PK_OK)
        for (unsigned i = 0; i < out.n; i++)
            if (out.act[i].kind == PK_ACT_SEND)
                dev_send(w, d, P_N0 + s->node, out.act[i].data, out.act[i].len);
    dev_arm(w, d);
}

static void link_flush(world_t *w, uint32_t d, pk_out_t *out);

/* The initiator's next step once registered. */
static void dev_link_step(world_t *w, uint32_t d)
{
    dstate_t *s = &w->ds[d];
    active_t *a = s->a;
    uint32_t p = partner_of(w, d);
    uint64_t now = pk_sim_now(w->sim);
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    if (p == UINT32_MAX || d % 2 || a->established)
        return;
    pk_reg_id_t pid = dev_id(p);
    uint32_t ksi = 0;
    int have = 0;
    if (s->mode == PK_REG_MODE_PAIRS) {
        have = pk_reg_dev_pair_ksi(&a->reg, &pid, &ksi) == PK_OK;
        if (!have)
            pk_sim_fail(w->sim, "device %u registered without the key of its pair", d);
    } else {
        for (unsigned i = 0; i < PK_REG_MAX_IND; i++)
            if (a->reg.ind[i].used && a->reg.ind[i].role == PK_REG_ROLE_INITIATOR &&
                pk_reg_id_eq(&a->reg.ind[i].peer, &pid)) {
                ksi = a->reg.ind[i].ksi;
                have = 1;
            }
        if (!have) {
            if (!a->intruder_asked && w->n > 4) {
                /* ask once for a pair outside the allowed list */
                pk_reg_id_t bad = dev_id((d + 3) % w->n);
                a->intruder_asked = 1;
                if (pk_reg_dev_link_request(&a->reg, &bad, &out) == PK_OK)
                    for (unsigned i = 0; i < out.n; i++)
                        if (out.act[i].kind == PK_ACT_SEND)
                            dev_send(w, d, P_N0 + s->node, out.act[i].data, out.act[i].len);
                pk_out_reset(&out);
            }
            if (pk_reg_dev_link_request(&a->reg, &pid, &out) == PK_OK)
                for (unsigned i = 0; i < out.n; i++)
                    if (out.act[i].kind == PK_ACT_SEND)
                        dev_send(w, d, P_N0 + s->node, out.act[i].data, out.act[i].len);
            a->app_at = now + LINKWAIT_MS;
            return;
        }
    }
    if (!have)
        return;
    pk_link_clear(&a->link);
    pk_reg_id_t self = dev_id(d);
    pk_link_cfg_t lc = {.self_id = self.b,
                        .self_len = self.len,
                        .lookup = pk_reg_dev_lookup,
                        .lookup_ctx = &a->reg,
                        .rto_ms = 500,
                        .max_tries = 5};
    if (pk_link_init(&a->link, &lc, PK_LINK_INITIATOR) != PK_OK)
        abort();
    a->link_on = 1;
    if (pk_link_connect(&a->link, pid.b, pid.len, ksi, &w->dev_rng, now, &out) == PK_OK)
        link_flush(w, d, &out);
    a->app_at = now + LINKWAIT_MS + 4000;
}

/* The responder's view of its link, carried in its pong: KSI(4) and the
 * first 8 bytes of SHA-256(PIK). The pong arrives sealed under the link, and
 * the responder may have crashed or started another link since it sent it,
 * so the comparison is with what it held when it answered. */
#define PONG_LEN (1 + 4 + 4 + 8)

static void link_view(const pk_link_t *l, uint8_t v[12])
{
    uint8_t h[PK_SHA256_LEN];
    if (pk_sha256(l->pik, PK_LINK_KEY_LEN, h) != PK_OK)
        abort();
    pk_put_u32(v, l->ksi);
    memcpy(v + 4, h, 8);
}

static void pair_done(world_t *w, uint32_t d, const uint8_t view[12])
{
    uint32_t p = partner_of(w, d);
    active_t *a = w->ds[d].a;
    uint8_t mine[12];
    link_view(&a->link, mine);
    if (pk_get_u32(view) != a->link.ksi || !pk_ct_eq(view + 4, mine + 4, 8))
        pk_sim_fail(w->sim, "pair %u: the two ends hold different link keys", pair_of(d));
    ksi_note(w, a->link.ksi, pair_of(d), "link");
    pk_sim_count(w->sim, w->ds[d].mode == PK_REG_MODE_PAIRS ? w->c_links1 : w->c_links2, 1);
    pk_sim_trace(w->sim, "linked %u-%u ksi=%u", d, p, a->link.ksi);
    w->ds[d].phase = w->ds[p].phase = PH_DONE;
    dev_free(w, d);
    dev_free(w, p); /* absent when it crashed after answering */
}

static void link_flush(world_t *w, uint32_t d, pk_out_t *out)
{
    uint32_t p = partner_of(w, d);
    for (unsigned i = 0; i < out->n; i++) {
        const pk_act_t *x = &out->act[i];
        active_t *a = w->ds[d].a;
        if (!a)
            break;
        if (x->kind == PK_ACT_SEND) {
            dev_send(w, d, P_DEV0 + p, x->data, x->len);
        } else if (x->code == PK_LINK_EV_ESTABLISHED) {
            a->established = 1;
            a->progress_at = pk_sim_now(w->sim);
            if (d % 2 == 0)
                a->app_at = pk_sim_now(w->sim); /* ping now */
        } else if (x->code == PK_LINK_EV_FAILED) {
            pk_sim_count(w->sim, w->c_linkfail, 1);
            if (d % 2 == 0)
                a->app_at = pk_sim_now(w->sim) + 1000 + pk_sim_rng_below(&w->dr, 2000);
        } else if (x->code == PK_LINK_EV_DATA) {
            if (x->len == 5 && x->data[0] == 'p' && d % 2 == 1) {
                if (pk_link_state(&a->link) != PK_LINK_S_ESTABLISHED) {
                    pk_sim_fail(w->sim, "pair %u: data on a link not established", pair_of(d));
                    break;
                }
                uint8_t pong[PONG_LEN] = {'P'};
                pk_put_u32(pong + 1, d);
                link_view(&a->link, pong + 5);
                pk_out_t o2;
                uint8_t ar[2048];
                pk_out_init(&o2, ar, sizeof ar);
                if (pk_link_send(&a->link, pong, sizeof pong, &o2) == PK_OK)
                    for (unsigned j = 0; j < o2.n; j++)
                        if (o2.act[j].kind == PK_ACT_SEND)
                            dev_send(w, d, P_DEV0 + p, o2.act[j].data, o2.act[j].len);
            } else if (x->len == PONG_LEN && x->data[0] == 'P' && d % 2 == 0 &&
                       pk_get_u32(x->data + 1) == p) {
                pair_done(w, d, x->data + 5);
                break;
            }
        }
    }
    pk_out_reset(out);
}

static void dev_reg_events(world_t *w, uint32_t d, pk_out_t *out)
{
    dstate_t *s = &w->ds[d];
    uint64_t now = pk_sim_now(w->sim);
    for (unsigned i = 0; i < out->n; i++) {
        const pk_act_t *x = &out->act[i];
        active_t *a = s->a;
        if (x->kind == PK_ACT_SEND) {
            dev_send(w, d, P_N0 + s->node, x->data, x->len);
            continue;
        }
        switch (x->code) {
        case PK_REG_EV_REGISTERED: {
            s->phase = PH_READY;
            s->registered_once = 1;
            s->regs++;
            pk_sim_count(w->sim, w->c_reg, 1);
            a->progress_at = now;
            size_t nk = 0;
            pk_reg_key_t *kt = (pk_reg_key_t *)pk_reg_dev_keys(&a->reg, &nk);
            if (w->o->fault == PK_SIM_FAULT_REG_CORRUPT && d == 1 && nk > 0)
                kt[0].key[0] ^= 0x01; /* BROKEN ON PURPOSE */
            for (size_t k = 0; k < nk && a->reg.keys.mode == PK_REG_MODE_PAIRS; k++) {
                uint32_t q = dev_of_id(w, kt[k].peer.b, kt[k].peer.len);
                if (!allowed(w, d, q))
                    pk_sim_fail(w->sim,
                                "device %u given a root key for a pair outside "
                                "its allowed list",
                                d);
                else if (q == partner_of(w, d)) /* crowd keys belong to other pairs */
                    ksi_note(w, kt[k].ksi, pair_of(d), "root key");
            }
            /* a crowd member holds a key for every option-1 member (paged) */
            if (in_crowd(w, d) &&
                (nk != w->crowd_pairs - 1 || pk_reg_dev_keys_missing(&a->reg) != 0)) {
                pk_sim_fail(w->sim, "device %u registered with %zu of its %u root keys", d, nk,
                            w->crowd_pairs - 1);
            }
            if (in_crowd(w, d))
                pk_sim_count(w->sim, w->c_crowd_keys, nk);
            a->app_at = now + (d % 2 ? RESP_REREG_MS : 1);
            break;
        }
        case PK_REG_EV_FAILED: a->app_at = now + 1000 + pk_sim_rng_below(&w->dr, 3000); break;
        case PK_REG_EV_LINK_IND: {
            uint32_t q = dev_of_id(w, x->data, x->len);
            if (!allowed(w, d, q)) {
                pk_sim_fail(w->sim, "device %u indicated a link outside its allowed list", d);
                break;
            }
            for (unsigned j = 0; j < PK_REG_MAX_IND; j++)
                if (a->reg.ind[j].used &&
                    dev_of_id(w, a->reg.ind[j].peer.b, a->reg.ind[j].peer.len) == q)
                    ksi_note(w, a->reg.ind[j].ksi, pair_of(d), "pool indication");
            a->progress_at = now;
            if (d % 2 == 0 && !a->link_on)
                a->app_at = now;
            break;
        }
        case PK_REG_EV_LINK_REJ: {
            uint32_t q = dev_of_id(w, x->data, x->len ? x->len - 1 : 0);
            uint8_t why = x->len ? x->data[x->len - 1] : 0;
            pk_sim_count(w->sim, w->c_rej, 1);
            if (!allowed(w, d, q)) {
                if (why == PK_REG_REJ_DENIED)
                    pk_sim_count(w->sim, w->c_denied, 1);
                break;
            }
            if (why == PK_REG_REJ_DENIED)
                pk_sim_fail(w->sim, "device %u: link with its allowed partner denied", d);
            a->app_at = now + 1000 + pk_sim_rng_below(&w->dr, 2000);
            break;
        }
        default: break;
        }
    }
    pk_out_reset(out);
}

static void dev_input(world_t *w, const pk_sim_ev_t *ev)
{
    uint32_t d = ev->dst - P_DEV0;
    dstate_t *s = &w->ds[d];
    active_t *a = s->a;
    uint64_t now = pk_sim_now(w->sim);
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    if (!a)
        return; /* idle or finished: nothing listens */
    if (ev->src == P_N0 || ev->src == P_N1) {
        if (pk_reg_dev_input(&a->reg, ev->data, ev->len, now, &out) == PK_OK)
            dev_reg_events(w, d, &out);
    } else if (ev->src - P_DEV0 == partner_of(w, d) && s->phase == PH_READY) {
        if (d % 2 == 1 && ev->len && ev->data[0] == PK_LINK_T_DCR) {
            uint64_t h = 0xcbf29ce484222325ull;
            for (uint32_t i = 0; i < ev->len; i++)
                h = (h ^ ev->data[i]) * 0x100000001b3ull;
            if (!a->link_on || h != a->dcr_hash) {
                /* a new DCR: a fresh responder context */
                pk_link_clear(&a->link);
                pk_reg_id_t self = dev_id(d);
                pk_link_cfg_t lc = {.self_id = self.b,
                                    .self_len = self.len,
                                    .lookup = pk_reg_dev_lookup,
                                    .lookup_ctx = &a->reg,
                                    .rto_ms = 500,
                                    .max_tries = 5};
                if (pk_link_init(&a->link, &lc, PK_LINK_RESPONDER) != PK_OK)
                    abort();
                a->link_on = 1;
                a->established = 0;
                a->dcr_hash = h;
            }
        }
        if (a->link_on &&
            pk_link_input(&a->link, ev->data, ev->len, &w->dev_rng, now, &out) == PK_OK)
            link_flush(w, d, &out);
    }
    if (s->a)
        dev_arm(w, d);
}

static void dev_timer(world_t *w, uint32_t d)
{
    dstate_t *s = &w->ds[d];
    active_t *a = s->a;
    uint64_t now = pk_sim_now(w->sim);
    pk_out_t out;
    pk_out_init(&out, w->arena, sizeof w->arena);
    if (!a)
        return;
    a->armed = 0;
    if (pk_reg_dev_timeout(&a->reg, now, &out) == PK_OK)
        dev_reg_events(w, d, &out);
    if (a->link_on && pk_link_timeout(&a->link, now, &out) == PK_OK)
        link_flush(w, d, &out);
    if (!s->a)
        return;
    if (now >= a->app_at) {
        uint64_t stuck = d % 2 ? RESP_REREG_MS : STUCK_MS;
        if (s->phase == PH_REG || now - a->progress_at >= stuck ||
            a->reg.state == PK_REG_D_FAILED) {
            dev_register(w, d); /* no progress: register again */
            return;
        }
        if (s->phase == PH_READY && d % 2 == 0) {
            if (a->established) {
                uint8_t ping[5] = {'p', 0, 0, 0, 0};
                pk_put_u32(ping + 1, d);
                if (pk_link_send(&a->link, ping, sizeof ping, &out) == PK_OK)
                    link_flush(w, d, &out);
                if (s->a)
                    s->a->app_at = now + PING_MS;
            } else if (!a->link_on || pk_link_state(&a->link) == PK_LINK_S_FAILED ||
                       pk_link_next_deadline(&a->link) == UINT64_MAX) {
                dev_link_step(w, d);
            } else {
                a->app_at = now + LINKWAIT_MS;
            }
        } else {
            a->app_at = a->progress_at + stuck;
        }
    }
    if (s->a)
        dev_arm(w, d);
}

/* ---------------- chaos, dispatch ---------------- */

static void chaos(world_t *w)
{
    if (w->quiet)
        return;
    if (w->kms && !w->kms_cp && pk_sim_rng_ppm(&w->chaos, w->crash_ppm)) {
        if (pk_sim_rng_below(&w->chaos, 2))
            pk_sim_crash(w->sim, P_KMS, 500 + pk_sim_rng_below(&w->chaos, 4500));
        else
            w->kms_cp = 1;
    }
    for (int i = 0; i < 2; i++)
        if (w->node[i] && pk_sim_rng_ppm(&w->chaos, w->crash_ppm))
            pk_sim_crash(w->sim, P_N0 + (uint32_t)i, 500 + pk_sim_rng_below(&w->chaos, 4500));
    uint64_t milli = (uint64_t)w->n * w->crash_ppm / 100;
    uint64_t k = milli / 1000000 + (pk_sim_rng_below(&w->chaos, 1000000) < milli % 1000000);
    for (uint64_t j = 0; j < k; j++) {
        uint32_t d = (uint32_t)pk_sim_rng_below(&w->chaos, w->n);
        if (w->ds[d].phase != PH_DONE && w->ds[d].phase != PH_IDLE)
            pk_sim_crash(w->sim, P_DEV0 + d, 1000 + pk_sim_rng_below(&w->chaos, 9000));
    }
    pk_sim_at(w->sim, pk_sim_now(w->sim) + 1000, EV_CHAOS, 0, 0);
}

static void dispatch(void *ctx, pk_sim_t *sim, const pk_sim_ev_t *ev)
{
    world_t *w = ctx;
    switch (ev->kind) {
    case PK_SIM_EV_MSG:
        if (ev->dst == P_KMS)
            kms_input(w, ev);
        else if (ev->dst == P_N0 || ev->dst == P_N1)
            node_input(w, ev);
        else
            dev_input(w, ev);
        break;
    case PK_SIM_EV_TIMER:
        if (ev->dst == P_N0 || ev->dst == P_N1)
            node_timer(w, ev->dst == P_N0 ? 0 : 1);
        else if (ev->dst >= P_DEV0)
            dev_timer(w, ev->dst - P_DEV0);
        break;
    case EV_BOOT:
        if (pk_sim_up(sim, ev->dst) && w->ds[ev->dst - P_DEV0].phase == PH_IDLE)
            dev_register(w, ev->dst - P_DEV0);
        break;
    case EV_CHAOS: chaos(w); break;
    case EV_QUIET: {
        static const pk_sim_link_t calm = {0, 0, 0, 1, 20, 0};
        static const pk_sim_link_t tls = {0, 0, 0, 2, 2, 0};
        w->quiet = 1;
        pk_sim_set_all_links(sim, &calm);
        pk_sim_set_link(sim, 0, 0, &tls);
        pk_sim_trace(sim, "quiet");
        break;
    }
    default: break;
    }
}

static void on_crash(void *ctx, pk_sim_t *sim, uint32_t p)
{
    world_t *w = ctx;
    (void)sim;
    if (p == P_KMS) {
        pk_kms_free(w->kms);
        w->kms = NULL;
        w->kms_cp = 0;
        for (int i = 0; i < 2; i++)
            reconnect(w, i); /* the nodes see their connections close */
    } else if (p == P_N0 || p == P_N1) {
        int i = p == P_N0 ? 0 : 1;
        pk_node_free(w->node[i]);
        w->node[i] = NULL;
        w->kconn[i]++;
        w->nconn++;
    } else {
        uint32_t d = p - P_DEV0;
        dev_free(w, d);
        w->ds[d].phase = PH_IDLE;
    }
}

static void on_restart(void *ctx, pk_sim_t *sim, uint32_t p)
{
    world_t *w = ctx;
    if (p == P_KMS) {
        kms_start(w);
        for (int i = 0; i < 2; i++)
            reconnect(w, i);
    } else if (p == P_N0 || p == P_N1) {
        int i = p == P_N0 ? 0 : 1;
        node_start(w, i);
        reconnect(w, i);
    } else {
        pk_sim_at(sim, pk_sim_now(sim) + pk_sim_rng_below(&w->dr, 1000), EV_BOOT, p, 0);
    }
}

/* ---------------- setup and checks ---------------- */

static int setup_kms(world_t *w)
{
    int rc;
    uint32_t pool = w->n + 64; /* at most one allocation per pair, twice over */
    if (pool > PK_KMS_POOL_MAX_KEYS)
        pool = PK_KMS_POOL_MAX_KEYS;
    if ((rc = pk_kms_pool_create(w->kms, "pool", pool, 0, NULL)) != PK_OK)
        return rc;
    for (uint32_t d = 0; d < w->n; d++) {
        uint8_t k[16];
        char id[16];
        snprintf(id, sizeof id, "d%06u", d);
        dev_key(w, d, k);
        rc = pk_kms_device_add(w->kms, id, k, 16, mode_of(w, d),
                               mode_of(w, d) == PK_REG_MODE_POOL ? "pool" : NULL, 0, NULL);
        pk_wipe(k, sizeof k);
        if (rc != PK_OK)
            return rc;
        if (d % 2 == 1) {
            char a[16];
            snprintf(a, sizeof a, "d%06u", d - 1);
            if ((rc = pk_kms_allow(w->kms, a, id, 0)) != PK_OK)
                return rc;
        }
        if (in_crowd(w, d) && (rc = pk_kms_group_add(w->kms, "crowd", id, 0)) != PK_OK)
            return rc;
    }
    return PK_OK;
}

static void check(world_t *w)
{
    unsigned shown = 0;
    for (uint32_t d = 0; d + 1 < w->n; d += 2)
        if (w->ds[d].phase != PH_DONE && shown++ < 5)
            pk_sim_fail(w->sim, "pair %u (%u, %u, option %d) never got a verified link", pair_of(d),
                        d, d + 1, mode_of(w, d) == PK_REG_MODE_PAIRS ? 1 : 2);
}

int pk_sim_run_reg(const pk_sim_opts_t *o, FILE *summary, int json, pk_sim_result_t *r)
{
    world_t *w = calloc(1, sizeof *w);
    int rc = PK_ERR_NOMEM;
    if (!w)
        return rc;
    w->o = o;
    w->n = o->devices ? o->devices : 200;
    if (w->n < 2 || w->n > 999999) {
        free(w);
        return PK_ERR_INVAL;
    }
    w->crash_ppm = pk_sim_ppm(o->crash_rate);
    pk_sim_rng_seed(&w->chaos, o->seed, 21);
    pk_sim_rng_seed(&w->kr, o->seed, 22);
    pk_sim_rng_seed(&w->nr, o->seed, 23);
    pk_sim_rng_seed(&w->dr, o->seed, 24);
    w->kms_rng = pk_sim_rng_as_pk(&w->kr);
    w->node_rng = pk_sim_rng_as_pk(&w->nr);
    w->dev_rng = pk_sim_rng_as_pk(&w->dr);
    pk_sim_rng_bytes(&w->kr, w->kek, sizeof w->kek);
    w->ds = calloc(w->n, sizeof *w->ds);
    if (!w->ds)
        goto out;
    for (uint32_t d = 0; d < w->n; d++) {
        w->ds[d].node = node_of(d);
        w->ds[d].mode = mode_of(w, d);
    }
    w->crowd_n = (o->crowd < w->n ? o->crowd : w->n) & ~1u;
    for (uint32_t d = 0; d < w->crowd_n; d++)
        w->crowd_pairs += w->ds[d].mode == PK_REG_MODE_PAIRS;
    if (w->crowd_pairs > PK_REG_PEERS_MAX + 1) {
        rc = PK_ERR_INVAL; /* more peers than a registration hands out */
        goto out;
    }

    pk_sim_link_t udp = {
        pk_sim_ppm(o->loss), pk_sim_ppm(o->dup), pk_sim_ppm(o->reorder), 2, 40, 2000};
    pk_sim_link_t tls = {0, 0, 0, 2, 2, 0}; /* reliable, in order */
    pk_sim_cfg_t cfg = {.seed = o->seed,
                        .nproc = P_DEV0 + w->n,
                        .max_events = 3000ull * w->n + 1000000,
                        .trace = o->trace,
                        .progress = o->progress,
                        .label = "reg"};
    pk_sim_ops_t ops = {dispatch, on_crash, on_restart};
    if ((rc = pk_sim_new(&w->sim, &cfg, &udp, &ops, w)) != PK_OK)
        goto out;
    pk_sim_t *sim = w->sim;
    pk_sim_set_link(sim, 0, 0, &tls);
    for (uint32_t d = 0; d < w->n; d++)
        pk_sim_set_class(sim, P_DEV0 + d, 1);
    w->c_reg = pk_sim_counter(sim, "registrations", 0);
    w->c_rereg = pk_sim_counter(sim, "re-registrations (no progress)", 0);
    w->c_links1 = pk_sim_counter(sim, "links verified, option 1", 0);
    w->c_links2 = pk_sim_counter(sim, "links verified, option 2", 0);
    w->c_sig1 = pk_sim_counter(sim, "link signalling msgs, option 1", 0);
    w->c_sig2 = pk_sim_counter(sim, "link signalling msgs, option 2", 0);
    w->c_regmsgs = pk_sim_counter(sim, "registration msgs (device-node-kms)", 0);
    w->c_rej = pk_sim_counter(sim, "LINK_REJ received", 0);
    w->c_denied = pk_sim_counter(sim, "outside-list link requests denied", 0);
    w->c_linkfail = pk_sim_counter(sim, "link handshakes failed", 0);
    w->c_kms_busy = pk_sim_counter(sim, "kms audit flush failed", 0);
    w->c_kms_defer = pk_sim_counter(sim, "kms requests deferred (group commit)", 0);
    w->c_kms_cp_made = pk_sim_counter(sim, "kms crashes after a deferred request's commit", 0);
    w->c_stalled = pk_sim_counter(sim, "kms connections stalled", 0);
    if (w->crowd_n) /* only then: the summary and trace stay as they were without a crowd */
        w->c_crowd_keys = pk_sim_counter(sim, "crowd root keys held at registration", 0);

    if ((rc = pk_store_open("memory:", &w->st)) != PK_OK)
        goto out;
    kms_start(w);
    if ((rc = setup_kms(w)) != PK_OK)
        goto out;
    for (int i = 0; i < 2; i++) {
        node_start(w, i);
        kms_up_node(w, i);
        node_arm(w, i);
    }
    for (uint32_t d = 0; d < w->n; d += 2) {
        /* a pair boots within 5 s of each other */
        uint64_t t = pk_sim_rng_below(&w->dr, SPREAD_MS);
        pk_sim_at(sim, t, EV_BOOT, P_DEV0 + d, 0);
        if (d + 1 < w->n)
            pk_sim_at(sim, t + pk_sim_rng_below(&w->dr, 5000), EV_BOOT, P_DEV0 + d + 1, 0);
    }
    pk_sim_at(sim, 1000, EV_CHAOS, 0, 0);
    pk_sim_at(sim, CHAOS_MS, EV_QUIET, 0, 0);
    rc = pk_sim_run(sim, CHAOS_MS + QUIET_MS);
    if (rc == PK_ERR_LIMIT)
        pk_sim_fail(sim, "event budget exhausted (livelock?)");
    check(w);
    if (summary) {
        uint64_t l1 = pk_sim_counter_get(sim, "links verified, option 1");
        uint64_t l2 = pk_sim_counter_get(sim, "links verified, option 2");
        uint64_t s1 = pk_sim_counter_get(sim, "link signalling msgs, option 1");
        uint64_t s2 = pk_sim_counter_get(sim, "link signalling msgs, option 2");
        if (!json) {
            fprintf(summary,
                    "scenario reg: seed %" PRIu64 ", %u devices (%u pairs), 2 nodes, 1 kms\n",
                    o->seed, w->n, w->n / 2);
            fprintf(summary,
                    "  signalling per verified link: option 1 %.2f network msgs (%" PRIu64
                    " links), option 2 = baseline asking the network per link %.2f (%" PRIu64
                    " links)\n",
                    l1 ? (double)s1 / (double)l1 : 0.0, l1, l2 ? (double)s2 / (double)l2 : 0.0, l2);
            fprintf(summary, "  peak busy devices %zu (%zu bytes each while busy, 32 idle)\n",
                    w->peak_active, sizeof(active_t));
        }
        pk_sim_summary(sim, summary, json);
    }
    r->trace_hash = pk_sim_trace_hash(sim);
    r->failures = pk_sim_failures(sim);
    snprintf(r->first_failure, sizeof r->first_failure, "%s", pk_sim_first_failure(sim));
    pk_sim_stats_t st;
    pk_sim_stats(sim, &st);
    r->events = st.events;
    r->virtual_ms = pk_sim_now(sim);
    rc = PK_OK;
out:
    if (w->ds)
        for (uint32_t d = 0; d < w->n; d++)
            dev_free(w, d);
    for (int i = 0; i < 2; i++)
        pk_node_free(w->node[i]);
    pk_kms_free(w->kms);
    pk_store_close(w->st);
    pk_sim_free(w->sim);
    pk_wipe(w->kek, sizeof w->kek);
    free(w->ds);
    free(w->ksi_pair);
    free(w);
    return rc;
}
