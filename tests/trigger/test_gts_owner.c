/*
 * One gts serves a store (src/gts/gts_owner.c): the lease in the store,
 * taken over only when released, run out, or left by a process of this
 * host that is gone; a checkpoint by a server that lost it writes nothing;
 * and a server of another host that left an unfolded journal generation is
 * not taken over without that journal (unless forced).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core/crypto.h"
#include "gts.h"
#include "net/loop.h"
#include "store/wrap.h"

static char dir[64], store[128], journal[128], store2[128], journal2[128];

static void open_db(gts_db_t *db)
{
    CHECK_EQ_INT(gts_db_open(db, store, NULL, 1), PK_OK);
}

/* Another host's server: a different host key. */
static void other_host(gts_owner_t *o)
{
    gts_owner_self(o);
    o->host_key[0] ^= 0x5a;
    snprintf(o->host, sizeof o->host, "elsewhere");
}

static void test_claim_renew_release(void)
{
    gts_db_t db;
    gts_owner_t a, b, prev, got;
    int had = -1;
    open_db(&db);
    other_host(&a);
    gts_owner_self(&b);
    CHECK_EQ_INT(gts_owner_get(&db, &got), 0);
    CHECK_EQ_INT(gts_owner_claim(&db, &a, 1000, 100, &prev, &had), PK_OK);
    CHECK_EQ_INT(had, 0);
    CHECK_EQ_INT(gts_owner_get(&db, &got), 1);
    CHECK_MEM(got.id, a.id, 16);
    CHECK_EQ_INT(got.until_ms, 1100);
    CHECK(strcmp(got.host, "elsewhere") == 0);
    /* held: refused, nothing written */
    CHECK_EQ_INT(gts_owner_claim(&db, &b, 1099, 100, &prev, &had), PK_ERR_BUSY);
    CHECK_MEM(prev.id, a.id, 16);
    CHECK_EQ_INT(gts_owner_get(&db, &got), 1);
    CHECK_MEM(got.id, a.id, 16);
    /* its lease over: taken, the previous owner reported */
    CHECK_EQ_INT(gts_owner_claim(&db, &b, 1100, 100, &prev, &had), PK_OK);
    CHECK_EQ_INT(had, 1);
    CHECK_MEM(prev.id, a.id, 16);
    /* the old owner is fenced off; the new one renews */
    CHECK_EQ_INT(gts_owner_release(&db, &a), PK_OK); /* not a's: left alone */
    CHECK_EQ_INT(gts_owner_get(&db, &got), 1);
    CHECK_MEM(got.id, b.id, 16);
    CHECK_EQ_INT(gts_owner_release(&db, &b), PK_OK);
    CHECK_EQ_INT(gts_owner_get(&db, &got), 0);
    /* released: anyone may claim at once */
    CHECK_EQ_INT(gts_owner_claim(&db, &a, 1101, 100, &prev, &had), PK_OK);
    CHECK_EQ_INT(had, 0);
    CHECK_EQ_INT(gts_owner_release(&db, &a), PK_OK);
    gts_db_close(&db);
}

/* A server of this host whose process is gone is taken over before its
 * lease runs out; one whose process lives is not. */
static void test_same_host_pid(void)
{
    gts_db_t db;
    gts_owner_t dead, live, me, prev;
    int had = 0;
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    CHECK(child > 0);
    waitpid(child, NULL, 0); /* child is gone (and reaped) */
    open_db(&db);
    gts_owner_self(&me);
    gts_owner_self(&dead);
    dead.pid = (uint32_t)child;
    CHECK_EQ_INT(gts_owner_claim(&db, &dead, 1000, 1000000, &prev, &had), PK_OK);
    CHECK_EQ_INT(gts_owner_claim(&db, &me, 2000, 1000, &prev, &had), PK_OK);
    CHECK_EQ_INT(had, 1);
    CHECK_EQ_INT(prev.pid, (uint32_t)child);
    CHECK_EQ_INT(gts_owner_release(&db, &me), PK_OK);
    gts_owner_self(&live);
    live.pid = (uint32_t)getppid(); /* alive (start time not recorded) */
    live.start = 0;
    CHECK_EQ_INT(gts_owner_claim(&db, &live, 1000, 1000000, &prev, &had), PK_OK);
    CHECK_EQ_INT(gts_owner_claim(&db, &me, 2000, 1000, &prev, &had), PK_ERR_BUSY);
    CHECK_EQ_INT(gts_owner_release(&db, &live), PK_OK);
    /* the pid alive but another process (a start time that differs): gone */
    live.start = 12345;
    CHECK_EQ_INT(gts_owner_claim(&db, &live, 1000, 1000000, &prev, &had), PK_OK);
    CHECK_EQ_INT(gts_owner_claim(&db, &me, 2000, 1000, &prev, &had), PK_OK);
    CHECK_EQ_INT(gts_owner_release(&db, &me), PK_OK);
    /* ourselves, as recorded by gts_owner_self (pid and start time): alive */
    gts_owner_t self;
    gts_owner_self(&self);
    CHECK(self.start != 0);
    CHECK_EQ_INT(gts_owner_claim(&db, &self, 1000, 1000000, &prev, &had), PK_OK);
    CHECK_EQ_INT(gts_owner_claim(&db, &me, 2000, 1000, &prev, &had), PK_ERR_BUSY);
    CHECK_EQ_INT(gts_owner_release(&db, &self), PK_OK);
    /* a zombie (exited, not yet reaped): gone */
    pid_t z = fork();
    if (z == 0)
        _exit(0);
    CHECK(z > 0);
    usleep(100000);
    gts_owner_t zombie;
    gts_owner_self(&zombie);
    zombie.pid = (uint32_t)z;
    zombie.start = 0;
    CHECK_EQ_INT(gts_owner_claim(&db, &zombie, 1000, 1000000, &prev, &had), PK_OK);
    CHECK_EQ_INT(gts_owner_claim(&db, &me, 2000, 1000, &prev, &had), PK_OK);
    waitpid(z, NULL, 0);
    CHECK_EQ_INT(gts_owner_release(&db, &me), PK_OK);
    gts_owner_self(&live);
    live.pid = (uint32_t)getppid();
    live.start = 0;
    CHECK_EQ_INT(gts_owner_claim(&db, &live, 1000, 1000000, &prev, &had), PK_OK);
    /* the same pid on another host says nothing about liveness here */
    gts_owner_t far;
    other_host(&far);
    far.pid = (uint32_t)child;
    CHECK_EQ_INT(gts_owner_release(&db, &live), PK_OK);
    CHECK_EQ_INT(gts_owner_claim(&db, &far, 1000, 1000000, &prev, &had), PK_OK);
    CHECK_EQ_INT(gts_owner_claim(&db, &me, 2000, 1000, &prev, &had), PK_ERR_BUSY);
    CHECK_EQ_INT(gts_owner_release(&db, &far), PK_OK);
    gts_db_close(&db);
}

/* A checkpoint by a server that lost the store writes nothing. */
static void test_checkpoint_fenced(void)
{
    gts_db_t db;
    gts_owner_t a, b, prev;
    pk_wrap_ctx_t w;
    int had = 0;
    uint64_t folded = 99;
    memset(&w, 0, sizeof w);
    open_db(&db);
    gts_owner_self(&a);
    gts_owner_self(&b);
    uint64_t now = pk_now_realtime_ms();
    CHECK_EQ_INT(gts_owner_claim(&db, &a, now, 60000, &prev, &had), PK_OK);
    CHECK_EQ_INT(pk_wrap_ctx_init(&w, db.kek), PK_OK);
    CHECK_EQ_INT(gts_db_checkpoint(&db, &w, NULL, NULL, 0, NULL, 0, 3, &a, 60000), PK_OK);
    CHECK_EQ_INT(gts_db_folded(&db, &folded), PK_OK);
    CHECK_EQ_INT(folded, 3);
    gts_owner_t got;
    CHECK_EQ_INT(gts_owner_get(&db, &got), 1);
    CHECK_EQ_INT(got.gen, 4); /* the generation a now writes */
    /* b takes over (a's lease forced over): a's next checkpoint is refused */
    CHECK_EQ_INT(gts_owner_claim(&db, &b, pk_now_realtime_ms() + 65000, 60000, &prev, &had), PK_OK);
    CHECK_EQ_INT(gts_db_checkpoint(&db, &w, NULL, NULL, 0, NULL, 0, 4, &a, 60000), PK_ERR_DENIED);
    CHECK_EQ_INT(gts_db_folded(&db, &folded), PK_OK);
    CHECK_EQ_INT(folded, 3);
    CHECK_EQ_INT(gts_db_checkpoint(&db, &w, NULL, NULL, 0, NULL, 0, 4, &b, 60000), PK_OK);
    CHECK_EQ_INT(gts_db_folded(&db, &folded), PK_OK);
    CHECK_EQ_INT(folded, 4);
    CHECK_EQ_INT(gts_owner_release(&db, &b), PK_OK);
    pk_wrap_ctx_clear(&w);
    gts_db_close(&db);
}

/* The last server ran on another host and left generation 7 unfolded: a
 * new server here, without that journal, refuses unless forced. */
static void test_cross_host_journal(void)
{
    gts_db_t db;
    gts_owner_t far, prev, got;
    gts_server_t *srv = NULL;
    int had = 0;
    open_db(&db);
    other_host(&far);
    far.gen = 7;
    /* while its lease runs it is simply busy */
    CHECK_EQ_INT(gts_owner_claim(&db, &far, pk_now_realtime_ms(), 60000, &prev, &had), PK_OK);
    gts_db_close(&db);
    gts_serve_opts_t o = {.store = store, .listen = "127.0.0.1:0", .journal = journal};
    o.force_takeover = 1;
    CHECK_EQ_INT(gts_server_new(&srv, &o), PK_ERR_BUSY);
    o.force_takeover = 0;
    open_db(&db);
    CHECK_EQ_INT(gts_owner_release(&db, &far), PK_OK);
    CHECK_EQ_INT(gts_owner_claim(&db, &far, 1000, 100, &prev, &had), PK_OK); /* long over */
    gts_db_close(&db);
    CHECK_EQ_INT(gts_server_new(&srv, &o), PK_ERR_BUSY);
    CHECK(srv == NULL);
    open_db(&db);
    CHECK_EQ_INT(gts_owner_get(&db, &got), 1);
    CHECK_MEM(got.id, far.id, 16); /* untouched */
    gts_db_close(&db);
    o.force_takeover = 1;
    CHECK_EQ_INT(gts_server_new(&srv, &o), PK_OK);
    open_db(&db);
    CHECK_EQ_INT(gts_owner_get(&db, &got), 1);
    CHECK(memcmp(got.id, far.id, 16) != 0);
    CHECK_EQ_INT(got.pid, (uint32_t)getpid());
    gts_db_close(&db);
    gts_server_free(srv); /* a clean stop releases the store */
    open_db(&db);
    CHECK_EQ_INT(gts_owner_get(&db, &got), 0);
    gts_db_close(&db);

    /* a server that fails to start after taking the lease (its port taken)
     * answered nothing: it leaves the store free, not held until its lease
     * runs out and not needing its journal on another host */
    o.force_takeover = 0;
    o.listen = "127.0.0.1:0";
    CHECK_EQ_INT(gts_server_new(&srv, &o), PK_OK);
    char busy[64];
    snprintf(busy, sizeof busy, "127.0.0.1:%u", gts_server_port(srv));
    gts_serve_opts_t o2 = o;
    o2.store = store2;
    o2.journal = journal2;
    o2.listen = busy;
    gts_server_t *srv2 = NULL;
    CHECK(gts_server_new(&srv2, &o2) != PK_OK);
    gts_db_t db2;
    CHECK_EQ_INT(gts_db_open(&db2, store2, NULL, 0), PK_OK);
    CHECK_EQ_INT(gts_owner_get(&db2, &got), 0);
    gts_db_close(&db2);
    gts_server_free(srv);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/proxkey-owner-XXXXXX");
    if (!mkdtemp(dir))
        return 1;
    snprintf(store, sizeof store, "%s/gts.db", dir);
    snprintf(journal, sizeof journal, "%s/gts.journal", dir);
    snprintf(store2, sizeof store2, "%s/gts2.db", dir);
    snprintf(journal2, sizeof journal2, "%s/gts2.journal", dir);
    if (pk_crypto_init() != PK_OK)
        return 1;
    RUN(test_claim_renew_release);
    RUN(test_same_host_pid);
    RUN(test_checkpoint_fenced);
    RUN(test_cross_host_journal);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return check_report();
}
