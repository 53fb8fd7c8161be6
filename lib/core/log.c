/* Logging for the shells: one key=value line per event. See log.h. */
#include "core/log.h"

#include <string.h>
#include <sys/time.h>
#include <time.h>

static int log_level = PK_LOG_INFO;
static const char *log_role = NULL;
static FILE *log_file = NULL;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void pk_log_set_level(int level)
{
    if (level < PK_LOG_ERROR)
        level = PK_LOG_ERROR;
    if (level > PK_LOG_DEBUG)
        level = PK_LOG_DEBUG;
    log_level = level;
}

int pk_log_get_level(void)
{
    return log_level;
}
void pk_log_set_role(const char *role)
{
    log_role = role;
}
void pk_log_set_file(FILE *f)
{
    log_file = f;
}

int pk_log_level_parse(const char *s)
{
    for (int i = 0; i <= PK_LOG_DEBUG; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

__attribute__((format(printf, 3, 0))) void pk_vlog(int level, const char *event, const char *fmt,
                                                   va_list ap)
{
    if (level > log_level)
        return;
    FILE *f = log_file ? log_file : stderr;
    char line[1024];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s%s%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), level_names[level], log_role ? " role=" : "",
                     log_role ? log_role : "", event);
    if (n < 0)
        return;
    if ((size_t)n < sizeof line && fmt && fmt[0]) {
        line[n++] = ' ';
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof line)
        n = (int)sizeof line - 1;
    /* One write per line so concurrent processes do not interleave mid-line. */
    line[n] = '\n';
    fwrite(line, 1, (size_t)n + 1, f);
    fflush(f);
}

void pk_log(int level, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pk_vlog(level, event, fmt, ap);
    va_end(ap);
}

void pk_drops_init(pk_drops_t *d, const char *const *names, unsigned n)
{
    memset(d, 0, sizeof *d);
    d->names = names;
    d->n = n < PK_DROP_MAX ? n : PK_DROP_MAX;
}

void pk_drop(pk_drops_t *d, unsigned r, uint64_t now_ms, const char *src)
{
    if (r >= d->n)
        r = d->n - 1; /* callers keep a catch-all last reason */
    d->count[r]++;
    if (d->last_log_ms[r] != 0 && now_ms - d->last_log_ms[r] < 1000) {
        d->suppressed[r]++;
        return;
    }
    pk_log(PK_LOG_WARN, "drop", "reason=%s src=%s total=%llu suppressed=%llu", d->names[r],
           src ? src : "-", (unsigned long long)d->count[r], (unsigned long long)d->suppressed[r]);
    d->suppressed[r] = 0;
    d->last_log_ms[r] = now_ms ? now_ms : 1;
}

uint64_t pk_drops_total(const pk_drops_t *d)
{
    uint64_t t = 0;
    for (unsigned i = 0; i < d->n; i++)
        t += d->count[i];
    return t;
}
