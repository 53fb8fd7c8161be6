/*
 * A development certificate authority for the servers' mutual TLS
 * (net/tls.h), built on the OpenSSL 3 API (no `openssl` command).
 *
 * A CA directory holds:
 *   ca.key   the CA's private key (PEM, PKCS#8, mode 0600)
 *   ca.crt   its self-signed certificate (CN "proxkey dev CA <8 hex>",
 *            basicConstraints critical CA:TRUE pathlen:0, keyUsage critical
 *            keyCertSign+cRLSign, 10 years)
 * and, by default, the leaves it issues: NAME.crt and NAME.key (0600). A
 * leaf has CN=NAME and subjectAltName DNS:NAME, keyUsage critical
 * digitalSignature, extendedKeyUsage serverAuth+clientAuth (one certificate
 * serves a daemon as server and as client), a random 126-bit serial and a
 * validity of one year from five minutes ago (clock skew).
 *
 * Nothing is ever overwritten: files are created with O_EXCL. This is a
 * development tool: the CA key is stored unencrypted; production operators
 * bring certificates from their own CA.
 *
 * Errors: PK_ERR_INVAL (bad name or argument), PK_ERR_EXISTS (a file to
 * create already exists), PK_ERR_NOTFOUND (no CA in dir), PK_ERR_IO (file
 * I/O; errno says why), PK_ERR_CRYPTO (OpenSSL failed, or ca.key does not
 * match ca.crt), PK_ERR_NOMEM. A failed call leaves no partial file behind.
 */
#ifndef PK_NET_CA_H
#define PK_NET_CA_H

#include <stdint.h>

#include "core/err.h"

#define PK_CA_NAME_MAX 64

enum pk_ca_keytype { PK_CA_ED25519 = 1, PK_CA_P256 = 2 };

typedef struct pk_ca_opts {
    int keytype;   /* enum pk_ca_keytype; 0 = Ed25519 (CA only: leaves use the CA's type) */
    uint32_t days; /* validity; 0 = 3650 for a CA, 365 for a leaf */
} pk_ca_opts_t;

/* Creates dir (mode 0700) if missing, then an Ed25519 CA in it. */
int pk_ca_create(const char *dir);
int pk_ca_create_opts(const char *dir, const pk_ca_opts_t *opts);

/*
 * Issues a leaf for name (see pk_ca_name_valid) signed by the CA in dir,
 * with a new key of the CA's type. out_cert/out_key NULL mean dir/NAME.crt
 * and dir/NAME.key.
 */
int pk_ca_issue(const char *dir, const char *name, const char *out_cert, const char *out_key);
int pk_ca_issue_opts(const char *dir, const char *name, const char *out_cert, const char *out_key,
                     const pk_ca_opts_t *opts);

/* 1 if name can be a node/kms identity: 1..PK_CA_NAME_MAX characters of
 * [A-Za-z0-9.-], starting with a letter or digit, and not "ca". */
int pk_ca_name_valid(const char *name);

/* The `proxkey ca` subcommand (lib/net/ca_cmd.c); argv[0] is "ca".
 * Returns the process exit status: 0 ok, 1 failure, 2 usage error. */
int pk_cmd_ca(int argc, char **argv);

#endif
