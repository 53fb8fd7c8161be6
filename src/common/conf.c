#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pk_conf_init(pk_conf_t *c, const pk_conf_key_t *keys, size_t n)
{
    if (n > PK_CONF_MAX)
        abort();
    memset(c, 0, sizeof *c);
    c->keys = keys;
    c->n = n;
    for (size_t i = 0; i < n; i++)
        if (keys[i].dflt) {
            snprintf(c->val[i], PK_CONF_VAL_MAX, "%s", keys[i].dflt);
            c->set[i] = 1;
        }
}

static int find(const pk_conf_t *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->n; i++)
        if (strlen(c->keys[i].name) == len && memcmp(c->keys[i].name, name, len) == 0)
            return (int)i;
    return -1;
}

static void known_list(const pk_conf_t *c, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < c->n && off < cap; i++) {
        int m = snprintf(buf + off, cap - off, "%s%s", i ? ", " : "", c->keys[i].name);
        if (m < 0)
            break;
        off += (size_t)m;
    }
}

static int set_value(pk_conf_t *c, int k, const char *v, size_t vlen, unsigned char level,
                     const char *where)
{
    if (c->set[k] > level)
        return 0; /* the command line wins over a file read after it */
    if (c->set[k] == level) {
        snprintf(c->err, sizeof c->err, "%s: '%s' given twice", where, c->keys[k].name);
        return -1;
    }
    if (vlen >= PK_CONF_VAL_MAX) {
        snprintf(c->err, sizeof c->err, "%s: value of '%s' is too long (max %d bytes)", where,
                 c->keys[k].name, PK_CONF_VAL_MAX - 1);
        return -1;
    }
    memcpy(c->val[k], v, vlen);
    c->val[k][vlen] = 0;
    c->set[k] = level;
    return 0;
}

int pk_conf_load(pk_conf_t *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(c->err, sizeof c->err, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL, where[300], known[400];
    size_t linecap = 0;
    ssize_t got;
    int lineno = 0, rc = 0;
    while ((got = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        size_t len = (size_t)got;
        if (len > 1023) {
            snprintf(c->err, sizeof c->err, "%s: line too long (max 1023 bytes)", where);
            rc = -1;
            break;
        }
        if (strlen(line) != len) {
            snprintf(c->err, sizeof c->err, "%s: NUL byte in line", where);
            rc = -1;
            break;
        }
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == 0 || *p == '#')
            continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            snprintf(c->err, sizeof c->err, "%s: expected 'key = value'", where);
            rc = -1;
            break;
        }
        char *kend = eq;
        while (kend > p && isspace((unsigned char)kend[-1]))
            kend--;
        char *v = eq + 1;
        while (isspace((unsigned char)*v))
            v++;
        char *vend = v + strlen(v);
        while (vend > v && isspace((unsigned char)vend[-1]))
            vend--;
        if (vend - v >= 2 && v[0] == '"' && vend[-1] == '"') {
            v++;
            vend--;
        }
        int k = find(c, p, (size_t)(kend - p));
        if (k < 0) {
            known_list(c, known, sizeof known);
            snprintf(c->err, sizeof c->err, "%s: unknown key '%.*s' (known: %s)", where,
                     (int)(kend - p > 64 ? 64 : kend - p), p, known);
            rc = -1;
            break;
        }
        if (c->keys[k].is_flag) {
            if (strncmp(v, "true", (size_t)(vend - v)) == 0 && vend - v == 4) {
                v = "1";
                vend = v + 1;
            } else if (strncmp(v, "false", (size_t)(vend - v)) == 0 && vend - v == 5) {
                v = "";
                vend = v;
            } else {
                snprintf(c->err, sizeof c->err, "%s: '%s' takes true or false", where,
                         c->keys[k].name);
                rc = -1;
                break;
            }
        }
        if (set_value(c, k, v, (size_t)(vend - v), 2, where) != 0) {
            rc = -1;
            break;
        }
    }
    free(line);
    fclose(f);
    return rc;
}

/* A user's argument as it may appear in a one-line error: at most 64 bytes,
 * control characters shown as '?'. */
static const char *shown(const char *a, char out[65])
{
    size_t i = 0;
    for (; a[i] && i < 64; i++)
        out[i] = (unsigned char)a[i] < 0x20 || a[i] == 0x7f ? '?' : a[i];
    out[i] = 0;
    return out;
}

int pk_conf_args(pk_conf_t *c, int argc, char **argv, char **pos, int max_pos, int *npos)
{
    int np = 0;
    char sh[65];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (np >= max_pos) {
                    snprintf(c->err, sizeof c->err, "unexpected argument '%s'", shown(argv[i], sh));
                    return -1;
                }
                pos[np++] = argv[i];
            }
            break;
        }
        if (a[0] != '-' || a[1] != '-') {
            if (a[0] == '-' && a[1]) {
                snprintf(c->err, sizeof c->err, "unknown option '%s'", shown(a, sh));
                return -1;
            }
            if (np >= max_pos) {
                snprintf(c->err, sizeof c->err, "unexpected argument '%s'", shown(a, sh));
                return -1;
            }
            pos[np++] = argv[i];
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        if (nlen == 6 && memcmp(name, "config", 6) == 0) {
            const char *file = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!file) {
                snprintf(c->err, sizeof c->err, "--config needs a file");
                return -1;
            }
            if (pk_conf_load(c, file) != 0)
                return -1;
            continue;
        }
        int k = find(c, name, nlen);
        if (k < 0) {
            char nm[65];
            snprintf(nm, sizeof nm, "%.*s", (int)(nlen > 64 ? 64 : nlen), name);
            snprintf(c->err, sizeof c->err, "unknown option '--%s'", shown(nm, sh));
            return -1;
        }
        const char *v;
        if (c->keys[k].is_flag) {
            if (eq) {
                snprintf(c->err, sizeof c->err, "--%s takes no value", c->keys[k].name);
                return -1;
            }
            v = "1";
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            snprintf(c->err, sizeof c->err, "--%s needs a value", c->keys[k].name);
            return -1;
        }
        if (set_value(c, k, v, strlen(v), 3, "command line") != 0)
            return -1;
    }
    if (npos)
        *npos = np;
    return 0;
}

const char *pk_conf_get(const pk_conf_t *c, const char *name)
{
    int k = find(c, name, strlen(name));
    if (k < 0)
        abort(); /* a key the daemon never declared: our bug */
    return c->set[k] ? c->val[k] : NULL;
}

int pk_conf_flag(const pk_conf_t *c, const char *name)
{
    const char *v = pk_conf_get(c, name);
    return v && v[0] == '1';
}

void pk_conf_help(const pk_conf_t *c)
{
    printf("options (also 'key = value' lines in a --config FILE):\n");
    printf("  %-24s %s\n", "--config FILE", "read options from FILE (command line wins)");
    for (size_t i = 0; i < c->n; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s", c->keys[i].name, c->keys[i].is_flag ? "" : " VALUE");
        if (c->keys[i].dflt && c->keys[i].dflt[0])
            printf("  %-24s %s (default %s)\n", left, c->keys[i].help, c->keys[i].dflt);
        else
            printf("  %-24s %s\n", left, c->keys[i].help);
    }
}
