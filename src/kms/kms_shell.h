/*
 * The kms daemon shell and CLI (`proxkey kms ...`): opens the store and the
 * KEK, runs the core (proto/kms/kms.h) behind mutual TLS, and the admin
 * commands. Logs one key=value line per event, never a key value.
 */
#ifndef PK_SRC_KMS_SHELL_H
#define PK_SRC_KMS_SHELL_H

#include <stdint.h>

#include "proto/kms/kms.h"

#define KMS_DEFAULT_DB     "kms.db"
#define KMS_DEFAULT_KEK    "kms.kek"
#define KMS_DEFAULT_LISTEN "127.0.0.1:7400"

typedef struct kms_serve_opts {
    const char *db, *kek, *listen, *ca, *cert, *key;
    const char *port_file; /* written with the bound port once listening (may be NULL) */
    uint64_t cache_ttl_ms; /* 0: core default */
    unsigned max_conns;    /* 0: transport default */
    size_t audit_max;      /* 0: core default */
    int no_group_writes;   /* 1: first registrations and allocations commit their
                            * writes on the event loop (the core without group_writes) */
} kms_serve_opts_t;

/* Runs the server until SIGINT/SIGTERM. Returns the exit status (0, 1). */
int kms_serve(const kms_serve_opts_t *o);

int pk_cmd_kms(int argc, char **argv);

#endif
