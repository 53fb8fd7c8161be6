/* The development CA: files, permissions, certificate contents, CLI. */
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "net/ca.h"

static char tmp[256];

static X509 *read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    return x;
}

static int file_mode(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

/* Verifies leaf against ca for a TLS purpose (X509_PURPOSE_SSL_CLIENT/SERVER). */
static int verify(X509 *ca, X509 *leaf, int purpose)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_add_cert(st, ca);
    X509_STORE_CTX_init(ctx, st, leaf, NULL);
    X509_STORE_CTX_set_purpose(ctx, purpose);
    int ok = X509_verify_cert(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    return ok;
}

static void check_ca_dir(const char *dir, int want_type)
{
    char p[512];
    snprintf(p, sizeof p, "%s/ca.key", dir);
    CHECK_EQ_INT(file_mode(p), 0600);
    snprintf(p, sizeof p, "%s/ca.crt", dir);
    X509 *ca = read_cert(p);
    CHECK(ca != NULL);
    if (ca == NULL)
        return;
    CHECK_EQ_INT(X509_check_ca(ca), 1);
    EVP_PKEY *pub = X509_get0_pubkey(ca);
    CHECK_EQ_INT(EVP_PKEY_get_base_id(pub), want_type);
    CHECK_EQ_INT(X509_verify(ca, pub), 1); /* self-signed */

    CHECK_EQ_INT(pk_ca_issue(dir, "node-1", NULL, NULL), PK_OK);
    snprintf(p, sizeof p, "%s/node-1.key", dir);
    CHECK_EQ_INT(file_mode(p), 0600);
    snprintf(p, sizeof p, "%s/node-1.crt", dir);
    X509 *leaf = read_cert(p);
    CHECK(leaf != NULL);
    if (leaf != NULL) {
        char cn[128] = "";
        X509_NAME_get_text_by_NID(X509_get_subject_name(leaf), NID_commonName, cn, sizeof cn);
        CHECK(strcmp(cn, "node-1") == 0);
        CHECK_EQ_INT(X509_check_host(leaf, "node-1", 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL),
                     1); /* the SAN, not the CN, carries it */
        CHECK_EQ_INT(X509_check_host(leaf, "node-2", 0, 0, NULL), 0);
        CHECK_EQ_INT(X509_check_ca(leaf), 0);
        CHECK_EQ_INT(verify(ca, leaf, X509_PURPOSE_SSL_CLIENT), 1);
        CHECK_EQ_INT(verify(ca, leaf, X509_PURPOSE_SSL_SERVER), 1);
        /* about one year */
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(leaf), X509_get0_notAfter(leaf));
        CHECK(days >= 365 && days <= 366);
        CHECK(ASN1_INTEGER_get(X509_get_serialNumber(leaf)) != 0);
        X509_free(leaf);
    }
    X509_free(ca);
}

static void test_create_and_issue_ed25519(void)
{
    char dir[300];
    snprintf(dir, sizeof dir, "%s/ed", tmp);
    CHECK_EQ_INT(pk_ca_create(dir), PK_OK);
    CHECK_EQ_INT(file_mode(dir), 0700);
    check_ca_dir(dir, EVP_PKEY_ED25519);
}

static void test_create_and_issue_p256(void)
{
    char dir[300];
    pk_ca_opts_t o = {.keytype = PK_CA_P256};
    snprintf(dir, sizeof dir, "%s/p256", tmp);
    CHECK_EQ_INT(pk_ca_create_opts(dir, &o), PK_OK);
    check_ca_dir(dir, EVP_PKEY_EC);
}

static void test_refusals(void)
{
    char dir[300], other[300], p[512];
    snprintf(dir, sizeof dir, "%s/ed", tmp);
    snprintf(other, sizeof other, "%s/other", tmp);
    CHECK_EQ_INT(pk_ca_create(dir), PK_ERR_EXISTS); /* never overwritten */
    CHECK_EQ_INT(pk_ca_issue(dir, "node-1", NULL, NULL), PK_ERR_EXISTS);
    CHECK_EQ_INT(pk_ca_issue(dir, "bad name", NULL, NULL), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_ca_issue(dir, "ca", NULL, NULL), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_ca_issue(dir, "-x", NULL, NULL), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_ca_issue(dir, "", NULL, NULL), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_ca_issue(dir, "a/b", NULL, NULL), PK_ERR_INVAL);
    CHECK_EQ_INT(pk_ca_issue(other, "node-1", NULL, NULL), PK_ERR_NOTFOUND);
    snprintf(p, sizeof p, "%s/other/node-1.key", tmp);
    CHECK(access(p, F_OK) != 0); /* nothing left behind */
    CHECK(pk_ca_name_valid("kms"));
    CHECK(pk_ca_name_valid("node-7.site-a"));
    CHECK(!pk_ca_name_valid("0123456789012345678901234567890123456789012345678901234567890123x"));
    /* Explicit output paths. */
    char crt[512], key[512];
    snprintf(crt, sizeof crt, "%s/gts.pem", tmp);
    snprintf(key, sizeof key, "%s/gts-key.pem", tmp);
    CHECK_EQ_INT(pk_ca_issue(dir, "gts", crt, key), PK_OK);
    CHECK_EQ_INT(file_mode(key), 0600);
    CHECK_EQ_INT(pk_ca_issue(dir, "gts", crt, crt), PK_ERR_INVAL);
    /* A CA whose key does not match its certificate is refused. */
    char mixed[300], cmd[2048];
    snprintf(mixed, sizeof mixed, "%s/mixed", tmp);
    CHECK_EQ_INT(pk_ca_create(mixed), PK_OK);
    snprintf(cmd, sizeof cmd, "%s/ca.key", mixed);
    unlink(cmd);
    snprintf(p, sizeof p, "%s/ca.key", dir);
    FILE *in = fopen(p, "r"), *out = fopen(cmd, "w");
    CHECK(in != NULL && out != NULL);
    int ch;
    while (in && out && (ch = fgetc(in)) != EOF)
        fputc(ch, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    CHECK_EQ_INT(pk_ca_issue(mixed, "x1", NULL, NULL), PK_ERR_CRYPTO);
}

static void test_cli(void)
{
    char dir[300];
    snprintf(dir, sizeof dir, "%s/cli", tmp);
    char *a_init[] = {"ca", "init", dir, NULL};
    char *a_issue[] = {"ca", "issue", dir, "kms-1", NULL};
    char *a_issue_days[] = {"ca", "issue", dir, "kms-2", "--days", "30", NULL};
    char *a_bad_name[] = {"ca", "issue", dir, "no/slash", NULL};
    char *a_bad_days[] = {"ca", "issue", dir, "kms-3", "--days", "0", NULL};
    char *a_bad_type[] = {"ca", "init", dir, "--key-type", "rsa", NULL};
    char *a_help[] = {"ca", "--help", NULL};
    char *a_sub_help[] = {"ca", "issue", "--help", NULL};
    char *a_none[] = {"ca", NULL};
    char *a_unknown[] = {"ca", "frob", NULL};
    char *a_missing[] = {"ca", "issue", dir, NULL};
    char *a_nodir[] = {"ca", "issue", "/nonexistent-proxkey-dir", "kms-1", NULL};
    CHECK_EQ_INT(pk_cmd_ca(3, a_init), 0);
    CHECK_EQ_INT(pk_cmd_ca(3, a_init), 1); /* exists */
    CHECK_EQ_INT(pk_cmd_ca(4, a_issue), 0);
    CHECK_EQ_INT(pk_cmd_ca(4, a_issue), 1);
    CHECK_EQ_INT(pk_cmd_ca(6, a_issue_days), 0);
    CHECK_EQ_INT(pk_cmd_ca(4, a_bad_name), 2);
    CHECK_EQ_INT(pk_cmd_ca(6, a_bad_days), 2);
    CHECK_EQ_INT(pk_cmd_ca(5, a_bad_type), 2);
    CHECK_EQ_INT(pk_cmd_ca(2, a_help), 0);
    CHECK_EQ_INT(pk_cmd_ca(3, a_sub_help), 0);
    CHECK_EQ_INT(pk_cmd_ca(1, a_none), 2);
    CHECK_EQ_INT(pk_cmd_ca(2, a_unknown), 2);
    CHECK_EQ_INT(pk_cmd_ca(3, a_missing), 2);
    CHECK_EQ_INT(pk_cmd_ca(4, a_nodir), 1);
    char p[512];
    snprintf(p, sizeof p, "%s/kms-2.crt", dir);
    X509 *x = read_cert(p);
    CHECK(x != NULL);
    if (x != NULL) {
        int days = 0, secs = 0;
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x));
        CHECK(days == 30);
        X509_free(x);
    }
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/pk-ca-test-XXXXXX");
    if (mkdtemp(tmp) == NULL)
        return 1;
    RUN(test_create_and_issue_ed25519);
    RUN(test_create_and_issue_p256);
    RUN(test_refusals);
    RUN(test_cli);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    return check_report();
}
