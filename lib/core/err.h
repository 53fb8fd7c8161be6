/*
 * proxkey error codes.
 *
 * Every fallible proxkey function returns an int: PK_OK (0) on success or one
 * of the negative PK_ERR_* codes below. The codes live in their own range and
 * never alias errno. Three classes, following STYLE.md §4:
 *
 *  - hostile input (PK_ERR_MALFORMED, PK_ERR_AUTH, PK_ERR_REPLAY, ...): the
 *    caller drops the input, counts it, and leaves its state unchanged;
 *  - local failure (PK_ERR_NOMEM, PK_ERR_IO, PK_ERR_CRYPTO, PK_ERR_BUSY, ...):
 *    the caller rolls back and reports;
 *  - our own bug: abort(), never an error code.
 */
#ifndef PK_CORE_ERR_H
#define PK_CORE_ERR_H

enum pk_err {
    PK_OK = 0,
    PK_ERR_INVAL = -1,     /* bad argument from a local caller */
    PK_ERR_MALFORMED = -2, /* input bytes do not parse (truncated, oversized, bad field) */
    PK_ERR_AUTH = -3,      /* MAC, tag, signature or RES check failed */
    PK_ERR_REPLAY = -4,    /* counter already seen or outside the window */
    PK_ERR_NOMEM = -5,     /* allocation failed */
    PK_ERR_CRYPTO = -6,    /* the crypto library failed (not an auth failure) */
    PK_ERR_NOTFOUND = -7,  /* no such record */
    PK_ERR_EXISTS = -8,    /* record already exists */
    PK_ERR_IO = -9,        /* file, socket or database I/O failed */
    PK_ERR_BUSY = -10,     /* transient conflict; the operation may be retried */
    PK_ERR_STATE = -11,    /* input not valid in the current state */
    PK_ERR_LIMIT = -12,    /* a configured limit (table size, rate) was reached */
    PK_ERR_SPACE = -13,    /* output buffer too small */
    PK_ERR_DENIED = -14,   /* policy forbids it (pair not allowed, device unknown) */
    PK_ERR_EXPIRED = -15,  /* key or credential past its expiry */
    PK_ERR_VERSION = -16,  /* unsupported protocol or schema version */
    PK_ERR_TIMEOUT = -17,  /* no answer in time */
};

/* A short, static, human-readable name for an error code ("malformed"). */
const char *pk_strerror(int err);

/* True for the codes that mean "hostile or broken input: drop and count". */
static inline int pk_err_is_input(int err)
{
    return err == PK_ERR_MALFORMED || err == PK_ERR_AUTH || err == PK_ERR_REPLAY ||
           err == PK_ERR_STATE || err == PK_ERR_DENIED || err == PK_ERR_EXPIRED ||
           err == PK_ERR_VERSION;
}

#endif
