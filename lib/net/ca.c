#include "net/ca.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CA_DAYS    3650u
#define LEAF_DAYS  365u
#define BACKDATE_S 300

int pk_ca_name_valid(const char *name)
{
    size_t n;

    if (name == NULL)
        return 0;
    n = strlen(name);
    if (n == 0 || n > PK_CA_NAME_MAX || strcmp(name, "ca") == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        int alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '-' && ch != '.')))
            return 0;
    }
    return 1;
}

static int path_join(char out[PATH_MAX], const char *dir, const char *file)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, file);
    return n > 0 && n < PATH_MAX ? PK_OK : PK_ERR_INVAL;
}

static EVP_PKEY *keygen(int keytype)
{
    if (keytype == PK_CA_P256)
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
}

/* Ed25519 signs the whole message: no digest. */
static const EVP_MD *sign_md(EVP_PKEY *key)
{
    return EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    if (ext == NULL)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* A certificate for pub with subject CN=cn, valid for days, not yet signed
 * and without extensions. */
static X509 *cert_new(EVP_PKEY *pub, const char *cn, uint32_t days)
{
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    unsigned char serial[16];
    int ok = 0;

    if (x == NULL || bn == NULL || RAND_bytes(serial, sizeof serial) != 1)
        goto done;
    serial[0] &= 0x7f; /* positive ... */
    serial[0] |= 0x40; /* ... and a fixed 16-byte encoding: 126 random bits */
    if (!X509_set_version(x, X509_VERSION_3) || BN_bin2bn(serial, sizeof serial, bn) == NULL ||
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
        X509_gmtime_adj(X509_getm_notBefore(x), -BACKDATE_S) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) == NULL ||
        !X509_set_pubkey(x, pub))
        goto done;
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"proxkey", -1,
                                    -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0))
        goto done;
    ok = 1;
done:
    BN_free(bn);
    if (!ok) {
        X509_free(x);
        x = NULL;
    }
    return x;
}

/* Creates path with O_EXCL and mode, and writes the key or cert as PEM. */
static int write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return errno == EEXIST ? PK_ERR_EXISTS : PK_ERR_IO;
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        int saved = errno;
        close(fd);
        unlink(path);
        errno = saved;
        return PK_ERR_IO;
    }
    int ok = key != NULL ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                         : PEM_write_X509(f, cert);
    int saved = errno;
    if (fflush(f) != 0 || fsync(fd) != 0)
        ok = 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok) {
        unlink(path);
        errno = saved;
        return PK_ERR_IO;
    }
    return PK_OK;
}

static int ensure_dir(const char *dir)
{
    struct stat st;
    if (mkdir(dir, 0700) == 0)
        return PK_OK;
    if (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        return PK_OK;
    return PK_ERR_IO;
}

int pk_ca_create(const char *dir)
{
    return pk_ca_create_opts(dir, NULL);
}

int pk_ca_create_opts(const char *dir, const pk_ca_opts_t *opts)
{
    char key_path[PATH_MAX], crt_path[PATH_MAX], cn[64];
    unsigned char tag[4];
    EVP_PKEY *key = NULL;
    X509 *x = NULL;
    int rc;
    int keytype = opts && opts->keytype ? opts->keytype : PK_CA_ED25519;
    uint32_t days = opts && opts->days ? opts->days : CA_DAYS;

    if (dir == NULL || (keytype != PK_CA_ED25519 && keytype != PK_CA_P256) || days > 36500)
        return PK_ERR_INVAL;
    if ((rc = path_join(key_path, dir, "ca.key")) != PK_OK ||
        (rc = path_join(crt_path, dir, "ca.crt")) != PK_OK)
        return rc;
    if ((rc = ensure_dir(dir)) != PK_OK)
        return rc;
    if (access(key_path, F_OK) == 0 || access(crt_path, F_OK) == 0)
        return PK_ERR_EXISTS;
    rc = PK_ERR_CRYPTO;
    if (RAND_bytes(tag, sizeof tag) != 1)
        goto done;
    snprintf(cn, sizeof cn, "proxkey dev CA %02x%02x%02x%02x", tag[0], tag[1], tag[2], tag[3]);
    key = keygen(keytype);
    if (key == NULL || (x = cert_new(key, cn, days)) == NULL)
        goto done;
    if (!X509_set_issuer_name(x, X509_get_subject_name(x)))
        goto done;
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") != 0 ||
        add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign") != 0 ||
        add_ext(x, &v3, NID_subject_key_identifier, "hash") != 0 ||
        X509_sign(x, key, sign_md(key)) == 0)
        goto done;
    if ((rc = write_pem(key_path, 0600, key, NULL)) != PK_OK)
        goto done;
    if ((rc = write_pem(crt_path, 0644, NULL, x)) != PK_OK) {
        int saved = errno;
        unlink(key_path);
        errno = saved;
        goto done;
    }
    rc = PK_OK;
done:
    if (rc == PK_ERR_CRYPTO)
        ERR_clear_error();
    EVP_PKEY_free(key);
    X509_free(x);
    return rc;
}

static int load_ca(const char *dir, EVP_PKEY **key, X509 **crt)
{
    char key_path[PATH_MAX], crt_path[PATH_MAX];
    FILE *f;
    int rc;

    *key = NULL;
    *crt = NULL;
    if ((rc = path_join(key_path, dir, "ca.key")) != PK_OK ||
        (rc = path_join(crt_path, dir, "ca.crt")) != PK_OK)
        return rc;
    if ((f = fopen(crt_path, "r")) == NULL)
        return errno == ENOENT ? PK_ERR_NOTFOUND : PK_ERR_IO;
    *crt = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if ((f = fopen(key_path, "r")) == NULL) {
        rc = errno == ENOENT ? PK_ERR_NOTFOUND : PK_ERR_IO;
        goto fail;
    }
    *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    rc = PK_ERR_CRYPTO;
    if (*crt == NULL || *key == NULL || X509_check_private_key(*crt, *key) != 1)
        goto fail;
    return PK_OK;
fail:
    ERR_clear_error();
    EVP_PKEY_free(*key);
    X509_free(*crt);
    *key = NULL;
    *crt = NULL;
    return rc;
}

int pk_ca_issue(const char *dir, const char *name, const char *out_cert, const char *out_key)
{
    return pk_ca_issue_opts(dir, name, out_cert, out_key, NULL);
}

int pk_ca_issue_opts(const char *dir, const char *name, const char *out_cert, const char *out_key,
                     const pk_ca_opts_t *opts)
{
    char key_path[PATH_MAX], crt_path[PATH_MAX], file[PK_CA_NAME_MAX + 8], san[PK_CA_NAME_MAX + 8];
    EVP_PKEY *ca_key = NULL, *key = NULL;
    X509 *ca_crt = NULL, *x = NULL;
    int rc;
    uint32_t days = opts && opts->days ? opts->days : LEAF_DAYS;

    if (dir == NULL || !pk_ca_name_valid(name) || days > 36500)
        return PK_ERR_INVAL;
    snprintf(file, sizeof file, "%s.crt", name);
    if (out_cert == NULL && (rc = path_join(crt_path, dir, file)) != PK_OK)
        return rc;
    snprintf(file, sizeof file, "%s.key", name);
    if (out_key == NULL && (rc = path_join(key_path, dir, file)) != PK_OK)
        return rc;
    if (out_cert != NULL) {
        if (strlen(out_cert) >= PATH_MAX)
            return PK_ERR_INVAL;
        strcpy(crt_path, out_cert);
    }
    if (out_key != NULL) {
        if (strlen(out_key) >= PATH_MAX)
            return PK_ERR_INVAL;
        strcpy(key_path, out_key);
    }
    if (strcmp(crt_path, key_path) == 0)
        return PK_ERR_INVAL;
    if (access(key_path, F_OK) == 0 || access(crt_path, F_OK) == 0)
        return PK_ERR_EXISTS;
    if ((rc = load_ca(dir, &ca_key, &ca_crt)) != PK_OK)
        return rc;
    rc = PK_ERR_CRYPTO;
    key = keygen(EVP_PKEY_get_base_id(ca_key) == EVP_PKEY_ED25519 ? PK_CA_ED25519 : PK_CA_P256);
    if (key == NULL || (x = cert_new(key, name, days)) == NULL)
        goto done;
    if (!X509_set_issuer_name(x, X509_get_subject_name(ca_crt)))
        goto done;
    snprintf(san, sizeof san, "DNS:%s", name);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, ca_crt, x, NULL, NULL, 0);
    if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") != 0 ||
        add_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth") != 0 ||
        add_ext(x, &v3, NID_subject_alt_name, san) != 0 ||
        add_ext(x, &v3, NID_subject_key_identifier, "hash") != 0 ||
        add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") != 0 ||
        X509_sign(x, ca_key, sign_md(ca_key)) == 0)
        goto done;
    if ((rc = write_pem(key_path, 0600, key, NULL)) != PK_OK)
        goto done;
    if ((rc = write_pem(crt_path, 0644, NULL, x)) != PK_OK) {
        int saved = errno;
        unlink(key_path);
        errno = saved;
        goto done;
    }
    rc = PK_OK;
done:
    if (rc == PK_ERR_CRYPTO)
        ERR_clear_error();
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(key);
    X509_free(ca_crt);
    X509_free(x);
    return rc;
}
