/*
 * Logging: one line per event, key=value, to stderr (or a file).
 *
 *   2026-11-26T07:25:37.123Z level=info role=kms event=device_added device=dev-1
 *
 * Never pass key material to these functions; there is no level at which
 * secrets are logged. Hostile-input drops go through pk_drop(), which counts
 * every drop by reason and logs each reason at most once per second with the
 * number suppressed in between.
 */
#ifndef PK_CORE_LOG_H
#define PK_CORE_LOG_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

enum pk_log_level { PK_LOG_ERROR = 0, PK_LOG_WARN = 1, PK_LOG_INFO = 2, PK_LOG_DEBUG = 3 };

/* Process-wide settings of the shell (cores do not log; they return codes). */
void pk_log_set_level(int level);
int pk_log_get_level(void);
void pk_log_set_role(const char *role); /* "kms", "node", ... printed as role= */
void pk_log_set_file(FILE *f);          /* default stderr */
/* Parses "error|warn|info|debug"; returns -1 when unknown. */
int pk_log_level_parse(const char *s);

/* Logs event with the key=value text fmt (printf style; may be NULL). */
void pk_log(int level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pk_vlog(int level, const char *event, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#define pk_error(ev, ...) pk_log(PK_LOG_ERROR, ev, __VA_ARGS__)
#define pk_warn(ev, ...)  pk_log(PK_LOG_WARN, ev, __VA_ARGS__)
#define pk_info(ev, ...)  pk_log(PK_LOG_INFO, ev, __VA_ARGS__)
#define pk_debug(ev, ...)                                                                          \
    do {                                                                                           \
        if (pk_log_get_level() >= PK_LOG_DEBUG)                                                    \
            pk_log(PK_LOG_DEBUG, ev, __VA_ARGS__);                                                 \
    } while (0)

/*
 * Drop counters: a shell owns one pk_drops_t, with one slot per reason it
 * defines (a small enum of its own, < PK_DROP_MAX). pk_drop() counts and
 * logs rate-limited: the first drop of a reason in each second is logged with
 * "suppressed=N" for those not logged since.
 */
#define PK_DROP_MAX 32

typedef struct pk_drops {
    const char *const *names; /* reason names, indexed by reason */
    unsigned n;               /* number of reasons */
    uint64_t count[PK_DROP_MAX];
    uint64_t suppressed[PK_DROP_MAX];
    uint64_t last_log_ms[PK_DROP_MAX];
} pk_drops_t;

void pk_drops_init(pk_drops_t *d, const char *const *names, unsigned n);
/* Counts a drop of reason r at now_ms; src is a printable source (may be NULL). */
void pk_drop(pk_drops_t *d, unsigned r, uint64_t now_ms, const char *src);
uint64_t pk_drops_total(const pk_drops_t *d);

#endif
