/*
 * libproxkey-device on its own: this test links ONLY proxkey-device and
 * libcrypto (plus the node core, compiled into the test as the in-test
 * node; the kms functions are the library's own pk_reg_kms_vector, driven by
 * tests/reg/harness.h). It registers two devices, opens a direct link
 * between them with option 1 and option 2, exports and imports every piece
 * of state, and checks (outside sanitiser builds) that the device cores make
 * no heap call of their own.
 */

#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "device/device.h"
#include "reg/harness.h"

#if defined(__SANITIZE_ADDRESS__)
#define PK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PK_ASAN 1
#endif
#endif

/* ---- counting malloc (non-ASan builds) -------------------------------------
 * Every heap call is forwarded to glibc; while counting is on, a call whose
 * return address lies in this executable's image (where the static
 * proxkey-device code lives) is counted as "ours". Calls made by libcrypto or
 * libc (shared objects) are counted separately. */
#ifndef PK_ASAN
static uintptr_t img_lo, img_hi;
static volatile int counting;
static volatile unsigned long heap_ours, heap_other;

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static void note(void *ret)
{
    if (!counting)
        return;
    uintptr_t a = (uintptr_t)ret;
    if (a >= img_lo && a < img_hi)
        heap_ours++;
    else
        heap_other++;
}
void *malloc(size_t n)
{
    note(__builtin_return_address(0));
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    note(__builtin_return_address(0));
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    note(__builtin_return_address(0));
    return __libc_realloc(p, n);
}
void free(void *p)
{
    __libc_free(p);
}

static int find_image(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    (void)data;
    if (info->dlpi_name && info->dlpi_name[0] != '\0')
        return 0; /* the main executable has an empty name and comes first */
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        if (p->p_type != PT_LOAD || !(p->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + p->p_vaddr, hi = lo + p->p_memsz;
        if (!img_lo || lo < img_lo)
            img_lo = lo;
        if (hi > img_hi)
            img_hi = hi;
    }
    return 1;
}
#endif

/* ---- helpers ---- */

typedef struct tdev {
    pk_reg_dev_t reg;
    pk_link_t link;
    pk_reg_dev_cfg_t cfg;
    uint8_t k[16];
} tdev_t;

static void dev_setup(tdev_t *d, const char *id, uint8_t kb)
{
    pk_reg_dev_clear(&d->reg); /* frees the channel's cipher contexts of a previous run */
    pk_link_clear(&d->link);
    memset(d, 0, sizeof *d);
    memset(d->k, kb, sizeof d->k);
    d->cfg = (pk_reg_dev_cfg_t){.dev_id = h_id(id),
                                .node_id = h_id("node-1"),
                                .k = d->k,
                                .klen = 16,
                                .rto_ms = 500,
                                .max_tries = 4};
    if (pk_reg_dev_init(&d->reg, &d->cfg) != PK_OK)
        abort();
}

static pk_link_cfg_t link_cfg(tdev_t *d)
{
    return (pk_link_cfg_t){.self_id = d->reg.id.b,
                           .self_len = d->reg.id.len,
                           .lookup = pk_reg_dev_lookup,
                           .lookup_ctx = &d->reg,
                           .rto_ms = 500,
                           .max_tries = 4};
}

/* Carries the SENDs of one out to the other link until quiet (bounded). */
static int pump(pk_link_t *from, pk_out_t *o, pk_link_t *to, const pk_rng_t *rng, uint64_t now,
                uint8_t last[PK_LINK_DATA_MAX], size_t *lastlen)
{
    static uint8_t arena[2][8192];
    pk_out_t q[2];
    int side = 0;
    pk_link_t *dst[2] = {to, from};
    pk_out_t *cur = o;
    for (int round = 0; round < 6; round++) {
        pk_out_init(&q[side], arena[side], sizeof arena[side]);
        int sent = 0;
        for (unsigned i = 0; i < cur->n; i++) {
            if (cur->act[i].kind != PK_ACT_SEND)
                continue;
            sent = 1;
            if (last && cur->act[i].code == PK_LINK_T_DATA) {
                memcpy(last, cur->act[i].data, cur->act[i].len);
                *lastlen = cur->act[i].len;
            }
            int rc = pk_link_input(dst[round % 2], cur->act[i].data, cur->act[i].len, rng, now,
                                   &q[side]);
            if (rc != PK_OK)
                return rc;
        }
        if (!sent)
            return PK_OK;
        cur = &q[side];
        side ^= 1;
    }
    return PK_OK;
}

static int got_data(const pk_out_t *o, const char *want)
{
    for (unsigned i = 0; i < o->n; i++)
        if (o->act[i].kind == PK_ACT_EVENT && o->act[i].code == PK_LINK_EV_DATA &&
            o->act[i].len == strlen(want) && memcmp(o->act[i].data, want, o->act[i].len) == 0)
            return 1;
    return 0;
}

static h_world_t world;
static tdev_t A, B, A2, B2;
static uint8_t ob[16384];

/* Registers A and B in mode pairs (one pair key) or pool. */
static void register_both(int pool, pk_rng_t *rng)
{
    h_world_init(&world, "node-1", 8);
    unsigned a = h_kms_add(&world.kms, "dev-a", 0xa1);
    unsigned b = h_kms_add(&world.kms, "dev-b", 0xb2);
    (void)h_kms_add(&world.kms, "dev-c", 0xc3);
    if (pool)
        h_kms_pool(&world.kms, 4);
    else
        h_kms_pair(&world.kms, a, b);
    dev_setup(&A, "dev-a", 0xa1);
    dev_setup(&B, "dev-b", 0xb2);
    CHECK_EQ_INT(h_register(&world, &A.reg, 1, rng, 100), PK_OK);
    CHECK_EQ_INT(h_register(&world, &B.reg, 2, rng, 100), PK_OK);
}

/* Connects A -> B and sends "hello" both ways. */
static void link_and_talk(pk_rng_t *rng)
{
    pk_out_t o;
    uint32_t ksi = 0;
    pk_link_cfg_t ca = link_cfg(&A), cb = link_cfg(&B);
    pk_reg_id_t pb = h_id("dev-b");
    CHECK_EQ_INT(pk_device_link_ksi(&A.reg, &pb, &ksi), PK_OK);
    CHECK_EQ_INT(pk_link_init(&A.link, &ca, PK_LINK_INITIATOR), PK_OK);
    CHECK_EQ_INT(pk_link_init(&B.link, &cb, PK_LINK_RESPONDER), PK_OK);
    pk_out_init(&o, ob, sizeof ob);
    CHECK_EQ_INT(pk_link_connect(&A.link, pb.b, pb.len, ksi, rng, 200, &o), PK_OK);
    CHECK_EQ_INT(pump(&A.link, &o, &B.link, rng, 200, NULL, NULL), PK_OK);
    CHECK_EQ_INT(pk_link_state(&A.link), PK_LINK_S_ESTABLISHED);
    CHECK_EQ_INT(pk_link_state(&B.link), PK_LINK_S_ESTABLISHED);
}

static void send_recv(pk_link_t *from, pk_link_t *to, const char *msg, int want_rc, uint8_t *rec,
                      size_t *reclen)
{
    pk_out_t o, in;
    static uint8_t ib[4096];
    pk_out_init(&o, ob, sizeof ob);
    CHECK_EQ_INT(pk_link_send(from, (const uint8_t *)msg, strlen(msg), &o), PK_OK);
    CHECK_EQ_INT(o.n, 1);
    if (rec) {
        memcpy(rec, o.act[0].data, o.act[0].len);
        *reclen = o.act[0].len;
    }
    pk_out_init(&in, ib, sizeof ib);
    CHECK_EQ_INT(pk_link_input(to, o.act[0].data, o.act[0].len, &pk_rng_system, 300, &in), want_rc);
    if (want_rc == PK_OK)
        CHECK(got_data(&in, msg));
}

static void test_option1(void)
{
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 1);
    register_both(0, &rng);
    link_and_talk(&rng);
    send_recv(&A.link, &B.link, "hello", PK_OK, NULL, NULL);
    send_recv(&B.link, &A.link, "hi back", PK_OK, NULL, NULL);
    /* no network at all from here: the world is wiped and the link still works */
    h_world_clear(&world);
    pk_link_clear(&A.link);
    pk_link_clear(&B.link);
    link_and_talk(&rng);
    send_recv(&A.link, &B.link, "offline", PK_OK, NULL, NULL);
    /* an unknown peer has no KSI */
    uint32_t ksi;
    pk_reg_id_t pc = h_id("dev-c");
    CHECK_EQ_INT(pk_device_link_ksi(&A.reg, &pc, &ksi), PK_ERR_NOTFOUND);
    pk_link_clear(&A.link);
    pk_link_clear(&B.link);
}

/* The registration survives export/import; every truncation and a foreign
 * identity are refused; the restored channel refuses a replayed record. */
static void test_reg_state(void)
{
    static uint8_t blob[PK_DEVICE_REG_STATE_MAX], blob2[PK_DEVICE_REG_STATE_MAX];
    size_t len = 0, len2 = 0;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 2);
    register_both(0, &rng);

    CHECK_EQ_INT(pk_device_reg_export(&A.reg, blob, sizeof blob, &len), PK_OK);
    CHECK(len > 100 && len <= PK_DEVICE_REG_STATE_MAX);
    CHECK_EQ_INT(pk_device_reg_export(&A.reg, blob2, len - 1, &len2), PK_ERR_SPACE);
    static tdev_t idle;
    dev_setup(&idle, "dev-a", 0xa1);
    CHECK_EQ_INT(pk_device_reg_export(&idle.reg, blob2, sizeof blob2, &len2), PK_ERR_STATE);

    CHECK_EQ_INT(pk_device_reg_import(&A2.reg, &A.cfg, blob, len), PK_OK);
    CHECK_EQ_INT(A2.reg.state, PK_REG_D_REGISTERED);
    CHECK(pk_reg_id_eq(&A2.reg.temp_id, &A.reg.temp_id));
    CHECK_MEM(&A2.reg.keys, &A.reg.keys, sizeof A.reg.keys);
    CHECK_EQ_INT(pk_device_reg_export(&A2.reg, blob2, sizeof blob2, &len2), PK_OK);
    CHECK_EQ_INT(len2, len);
    CHECK_MEM(blob2, blob, len);

    pk_reg_dev_clear(&A2.reg);
    for (size_t n = 0; n < len; n++)
        CHECK(pk_device_reg_import(&A2.reg, &A.cfg, blob, n) != PK_OK);
    CHECK(A2.reg.state == PK_REG_D_IDLE); /* cleared on failure */
    blob[4] = 9;
    CHECK_EQ_INT(pk_device_reg_import(&A2.reg, &A.cfg, blob, len), PK_ERR_VERSION);
    blob[4] = 1;
    CHECK_EQ_INT(pk_device_reg_import(&A2.reg, &B.cfg, blob, len), PK_ERR_INVAL);

    /* a link from restored devices works, and matches the originals' keys */
    CHECK_EQ_INT(pk_device_reg_import(&A2.reg, &A.cfg, blob, len), PK_OK);
    CHECK_EQ_INT(pk_device_reg_export(&B.reg, blob2, sizeof blob2, &len2), PK_OK);
    CHECK_EQ_INT(pk_device_reg_import(&B2.reg, &B.cfg, blob2, len2), PK_OK);
    pk_reg_dev_clear(&A.reg);
    pk_reg_dev_clear(&B.reg);
    A.reg = A2.reg; /* pk_reg_dev_t moves by value; A2 is not used again */
    B.reg = B2.reg;
    memset(&A2, 0, sizeof A2);
    memset(&B2, 0, sizeof B2);
    link_and_talk(&rng);
    send_recv(&A.link, &B.link, "restored", PK_OK, NULL, NULL);
    pk_link_clear(&A.link);
    pk_link_clear(&B.link);
    h_world_clear(&world);
    pk_wipe(blob, sizeof blob);
    pk_wipe(blob2, sizeof blob2);
}

/* Links survive export/import on both ends: counters continue, the replay
 * window is kept (a record taken before the restart is refused after it), a
 * record sealed before the export opens after it, and the blob holds no key. */
static void test_link_state(void)
{
    uint8_t la[PK_DEVICE_LINK_STATE_MAX], lb[PK_DEVICE_LINK_STATE_MAX];
    uint8_t rec1[PK_LINK_DATA_MAX], late[PK_LINK_DATA_MAX];
    size_t na = 0, nb = 0, r1 = 0, nlate = 0;
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 3);
    register_both(0, &rng);
    link_and_talk(&rng);
    send_recv(&A.link, &B.link, "one", PK_OK, rec1, &r1);
    /* sealed but not delivered before the restart */
    pk_out_t o;
    pk_out_init(&o, ob, sizeof ob);
    CHECK_EQ_INT(pk_link_send(&A.link, (const uint8_t *)"late", 4, &o), PK_OK);
    memcpy(late, o.act[0].data, o.act[0].len);
    nlate = o.act[0].len;

    CHECK_EQ_INT(pk_device_link_export(&A.link, la, sizeof la, &na), PK_OK);
    CHECK_EQ_INT(pk_device_link_export(&B.link, lb, sizeof lb, &nb), PK_OK);
    CHECK(na <= PK_DEVICE_LINK_STATE_MAX);
    CHECK(memmem(la, na, A.link.pik, sizeof A.link.pik) == NULL);
    int role = -1;
    const uint8_t *peer = NULL;
    size_t plen = 0;
    CHECK_EQ_INT(pk_device_link_peek(lb, nb, &role, &peer, &plen), PK_OK);
    CHECK_EQ_INT(role, PK_LINK_RESPONDER);
    CHECK(plen == 5 && memcmp(peer, "dev-a", 5) == 0);
    for (size_t n = 0; n < na; n++)
        CHECK(pk_device_link_peek(la, n, &role, &peer, &plen) != PK_OK);

    uint8_t pik_a[PK_LINK_KEY_LEN];
    memcpy(pik_a, A.link.pik, sizeof pik_a);
    pk_link_clear(&A.link);
    pk_link_clear(&B.link);
    pk_link_cfg_t ca = link_cfg(&A), cb = link_cfg(&B);
    CHECK_EQ_INT(pk_device_link_import(&A.link, &ca, la, na), PK_OK);
    CHECK_EQ_INT(pk_device_link_import(&B.link, &cb, lb, nb), PK_OK);
    CHECK_MEM(A.link.pik, pik_a, sizeof pik_a);
    CHECK_EQ_INT(pk_link_state(&B.link), PK_LINK_S_ESTABLISHED);

    pk_out_t in;
    static uint8_t ib[4096];
    pk_out_init(&in, ib, sizeof ib);
    CHECK_EQ_INT(pk_link_input(&B.link, rec1, r1, &rng, 400, &in), PK_ERR_REPLAY);
    CHECK_EQ_INT(pk_link_input(&B.link, late, nlate, &rng, 400, &in), PK_OK);
    CHECK(got_data(&in, "late"));
    send_recv(&A.link, &B.link, "two", PK_OK, NULL, NULL);
    send_recv(&B.link, &A.link, "three", PK_OK, NULL, NULL);

    /* the wrong device cannot import it; a device without the root key neither */
    pk_link_t x;
    CHECK_EQ_INT(pk_device_link_import(&x, &cb, la, na), PK_ERR_INVAL);
    B.reg.state = PK_REG_D_FAILED; /* B no longer has usable keys */
    CHECK_EQ_INT(pk_device_link_import(&x, &cb, lb, nb), PK_ERR_NOTFOUND);
    CHECK_EQ_INT(pk_link_state(&x), PK_LINK_S_IDLE);
    pk_reg_dev_clear(&B.reg);
    pk_link_clear(&A.link);
    pk_link_clear(&B.link);
    pk_reg_dev_clear(&A.reg);
    h_world_clear(&world);
}

/* Option 2: LINK_REQ to the node, the node indicates (KSI, param) to both
 * through their channels, the devices link; the indications survive export
 * and a replayed LINK_IND is refused by the restored channel. */
static void test_option2(void)
{
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 4);
    static uint8_t blob[PK_DEVICE_REG_STATE_MAX];
    size_t len = 0;
    pk_out_t o;
    uint8_t ind_b[PK_REG_SEALED_MAX], buf[PK_REG_SEALED_MAX];
    size_t nind_b = 0, n = 0;
    uint8_t type = 0;
    uint32_t ksi = 0;
    pk_reg_id_t pa = h_id("dev-a"), pb = h_id("dev-b");

    register_both(1, &rng);
    CHECK_EQ_INT(A.reg.keys.mode, PK_REG_MODE_POOL);
    CHECK_EQ_INT(pk_device_link_ksi(&A.reg, &pb, &ksi), PK_ERR_NOTFOUND);
    pk_out_init(&o, ob, sizeof ob);
    CHECK_EQ_INT(pk_reg_dev_link_request(&A.reg, &pb, &o), PK_OK);
    pk_reg_link_pt_t m;
    CHECK_EQ_INT(pk_reg_chan_open_link(&world.node_chan[0], o.act[0].data, o.act[0].len, &type, &m),
                 PK_OK);
    CHECK_EQ_INT(type, PK_REG_T_LINK_REQ);
    CHECK(pk_reg_id_eq(&m.peer, &pb));
    /* the node allocates KSI 0x2001 with a fresh param and indicates it */
    pk_reg_link_pt_t ia = {.peer = pb, .role = PK_REG_ROLE_INITIATOR, .ksi = 0x2001};
    pk_rng_fill(&rng, ia.param, sizeof ia.param);
    pk_reg_link_pt_t ib = ia;
    ib.peer = pa;
    ib.role = PK_REG_ROLE_RESPONDER;
    CHECK_EQ_INT(
        pk_reg_chan_seal_link(&world.node_chan[0], PK_REG_T_LINK_IND, &ia, buf, sizeof buf, &n),
        PK_OK);
    pk_out_init(&o, ob, sizeof ob);
    CHECK_EQ_INT(pk_reg_dev_input(&A.reg, buf, n, 150, &o), PK_OK);
    CHECK(h_has_event(&o, PK_REG_EV_LINK_IND));
    CHECK_EQ_INT(pk_reg_chan_seal_link(&world.node_chan[1], PK_REG_T_LINK_IND, &ib, ind_b,
                                       sizeof ind_b, &nind_b),
                 PK_OK);
    pk_out_init(&o, ob, sizeof ob);
    CHECK_EQ_INT(pk_reg_dev_input(&B.reg, ind_b, nind_b, 150, &o), PK_OK);

    /* B restarts: its indication and its channel's replay window survive */
    CHECK_EQ_INT(pk_device_reg_export(&B.reg, blob, sizeof blob, &len), PK_OK);
    pk_reg_dev_clear(&B.reg);
    CHECK_EQ_INT(pk_device_reg_import(&B.reg, &B.cfg, blob, len), PK_OK);
    pk_out_init(&o, ob, sizeof ob);
    CHECK_EQ_INT(pk_reg_dev_input(&B.reg, ind_b, nind_b, 160, &o), PK_ERR_REPLAY);

    CHECK_EQ_INT(pk_device_link_ksi(&A.reg, &pb, &ksi), PK_OK);
    CHECK_EQ_INT(ksi, 0x2001);
    link_and_talk(&rng);
    send_recv(&A.link, &B.link, "pool", PK_OK, NULL, NULL);
    pk_link_clear(&A.link);
    pk_link_clear(&B.link);
    pk_reg_dev_clear(&A.reg);
    pk_reg_dev_clear(&B.reg);
    h_world_clear(&world);
    pk_wipe(blob, sizeof blob);
}

/* No heap calls from library code during a whole registration, link, data,
 * export and import; the counter itself is proven live by a control call. */
#ifndef PK_ASAN
__attribute__((noinline)) static void *control_alloc(void)
{
    return malloc(32);
}
#endif

static void test_no_heap(void)
{
#ifdef PK_ASAN
    fprintf(stderr, "     (heap counting skipped under AddressSanitizer; the symbol check "
                    "device_lib_symbols still runs)\n");
#else
    h_rng_t rs;
    pk_rng_t rng = h_rng(&rs, 5);
    static uint8_t blob[PK_DEVICE_REG_STATE_MAX];
    size_t len = 0;
    dl_iterate_phdr(find_image, NULL);
    CHECK(img_lo != 0 && img_hi > img_lo);
    CHECK_EQ_INT(pk_crypto_init(), PK_OK);

    counting = 1;
    void *p = control_alloc();
    counting = 0;
    free(p);
    CHECK_EQ_INT(heap_ours, 1); /* the counter sees calls from this image */
    heap_ours = heap_other = 0;

    counting = 1;
    register_both(0, &rng);
    link_and_talk(&rng);
    send_recv(&A.link, &B.link, "no heap", PK_OK, NULL, NULL);
    CHECK_EQ_INT(pk_device_reg_export(&A.reg, blob, sizeof blob, &len), PK_OK);
    pk_reg_dev_clear(&A2.reg);
    CHECK_EQ_INT(pk_device_reg_import(&A2.reg, &A.cfg, blob, len), PK_OK);
    counting = 0;
    fprintf(stderr, "     heap calls: %lu from our code, %lu from OpenSSL/libc\n", heap_ours,
            heap_other);
    CHECK_EQ_INT(heap_ours, 0);
    CHECK(heap_other > 0); /* OpenSSL's EVP contexts: proves the interposer ran */
    pk_link_clear(&A.link);
    pk_link_clear(&B.link);
    pk_reg_dev_clear(&A.reg);
    pk_reg_dev_clear(&A2.reg);
    pk_reg_dev_clear(&B.reg);
    h_world_clear(&world);
#endif
}

static void test_version(void)
{
    CHECK(strcmp(pk_device_version(), PK_DEVICE_VERSION) == 0);
}

int main(void)
{
    RUN(test_version);
    RUN(test_option1);
    RUN(test_reg_state);
    RUN(test_link_state);
    RUN(test_option2);
    RUN(test_no_heap);
    return check_report();
}
