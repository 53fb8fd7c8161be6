/* `proxkey ca init|issue`: the command-line face of net/ca.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/ca.h"

static const char usage[] =
    "usage: proxkey ca init DIR [--key-type ed25519|p256] [--days N]\n"
    "       proxkey ca issue DIR NAME [--cert PATH] [--key PATH] [--days N]\n"
    "\n"
    "A development certificate authority for the servers' mutual TLS.\n"
    "  init   create DIR (mode 0700) and a CA in it: DIR/ca.key (0600), DIR/ca.crt\n"
    "         (default Ed25519, 3650 days)\n"
    "  issue  issue a certificate for NAME (a kms/node/gts identity: letters, digits,\n"
    "         '-' and '.') signed by the CA in DIR; CN=NAME, DNS:NAME, server and\n"
    "         client use, 365 days; default files DIR/NAME.crt and DIR/NAME.key (0600)\n"
    "Existing files are never overwritten.\n";

static int parse_days(const char *s, uint32_t *days)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v == 0 || v > 36500)
        return -1;
    *days = (uint32_t)v;
    return 0;
}

static int fail(const char *what, const char *dir, int rc)
{
    switch (rc) {
    case PK_ERR_EXISTS:
        fprintf(stderr, "proxkey ca %s: a file to create already exists in %s (nothing changed)\n",
                what, dir);
        break;
    case PK_ERR_NOTFOUND:
        fprintf(stderr, "proxkey ca %s: no CA in %s (run: proxkey ca init %s)\n", what, dir, dir);
        break;
    case PK_ERR_IO: fprintf(stderr, "proxkey ca %s: %s: %s\n", what, dir, strerror(errno)); break;
    case PK_ERR_CRYPTO:
        fprintf(stderr, "proxkey ca %s: OpenSSL failed (or %s/ca.key does not match ca.crt)\n",
                what, dir);
        break;
    default: fprintf(stderr, "proxkey ca %s: %s\n", what, pk_strerror(rc)); break;
    }
    return 1;
}

static int cmd_init(int argc, char **argv)
{
    pk_ca_opts_t o = {0};
    const char *dir = NULL;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--key-type") == 0 && i + 1 < argc) {
            const char *t = argv[++i];
            if (strcmp(t, "ed25519") == 0)
                o.keytype = PK_CA_ED25519;
            else if (strcmp(t, "p256") == 0)
                o.keytype = PK_CA_P256;
            else {
                fprintf(stderr, "proxkey ca init: unknown key type '%s' (ed25519 or p256)\n", t);
                return 2;
            }
        } else if (strcmp(argv[i], "--days") == 0 && i + 1 < argc) {
            if (parse_days(argv[++i], &o.days) != 0) {
                fprintf(stderr, "proxkey ca init: --days must be 1..36500\n");
                return 2;
            }
        } else if (argv[i][0] == '-' || dir != NULL) {
            fprintf(stderr, "proxkey ca init: unexpected argument '%s'\n", argv[i]);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (dir == NULL) {
        fprintf(stderr, "proxkey ca init: missing DIR (try 'proxkey ca --help')\n");
        return 2;
    }
    int rc = pk_ca_create_opts(dir, &o);
    if (rc != PK_OK)
        return fail("init", dir, rc);
    printf("created CA: %s/ca.crt (certificate), %s/ca.key (private key, mode 0600)\n", dir, dir);
    return 0;
}

static int cmd_issue(int argc, char **argv)
{
    pk_ca_opts_t o = {0};
    const char *dir = NULL, *name = NULL, *cert = NULL, *key = NULL;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--cert") == 0 && i + 1 < argc) {
            cert = argv[++i];
        } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
            key = argv[++i];
        } else if (strcmp(argv[i], "--days") == 0 && i + 1 < argc) {
            if (parse_days(argv[++i], &o.days) != 0) {
                fprintf(stderr, "proxkey ca issue: --days must be 1..36500\n");
                return 2;
            }
        } else if (argv[i][0] == '-' || (dir != NULL && name != NULL)) {
            fprintf(stderr, "proxkey ca issue: unexpected argument '%s'\n", argv[i]);
            return 2;
        } else if (dir == NULL) {
            dir = argv[i];
        } else {
            name = argv[i];
        }
    }
    if (dir == NULL || name == NULL) {
        fprintf(stderr, "proxkey ca issue: missing %s (try 'proxkey ca --help')\n",
                dir == NULL ? "DIR" : "NAME");
        return 2;
    }
    if (!pk_ca_name_valid(name)) {
        fprintf(stderr,
                "proxkey ca issue: invalid NAME '%s': 1..%d of letters, digits, '-' and '.', "
                "starting with a letter or digit, not 'ca'\n",
                name, PK_CA_NAME_MAX);
        return 2;
    }
    int rc = pk_ca_issue_opts(dir, name, cert, key, &o);
    if (rc != PK_OK)
        return fail("issue", dir, rc);
    if (cert != NULL || key != NULL)
        printf("issued %s: %s, %s\n", name, cert ? cert : "(default cert path)",
               key ? key : "(default key path)");
    else
        printf("issued %s: %s/%s.crt, %s/%s.key (mode 0600)\n", name, dir, name, dir, name);
    return 0;
}

int pk_cmd_ca(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        fprintf(stderr, "proxkey ca: no command given (try 'proxkey ca --help')\n");
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
    if (strcmp(argv[1], "init") == 0)
        return cmd_init(argc - 2, argv + 2);
    if (strcmp(argv[1], "issue") == 0)
        return cmd_issue(argc - 2, argv + 2);
    fprintf(stderr, "proxkey ca: unknown command '%s' (try 'proxkey ca --help')\n", argv[1]);
    return 2;
}
