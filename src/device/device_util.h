/*
 * What every `proxkey device ...` command shares: one-line errors and usage
 * errors with the command's name, --help detection, printing identities.
 */
#ifndef PK_SRC_DEVICE_UTIL_H
#define PK_SRC_DEVICE_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* "proxkey device CMD: message" on stderr; returns 1 (a run-time failure). */
int pk_dcli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "proxkey: device CMD: msg (try 'proxkey device CMD --help')"; returns 2. */
int pk_dcli_usage(const char *cmd, const char *msg);

/* 1 when any of argv[1..argc) asks for help. */
int pk_dcli_want_help(int argc, char **argv);

/* An identity as printable ASCII: anything else, and space, as '?'. */
void pk_dcli_print_id(FILE *f, const uint8_t *b, size_t n);

#endif
