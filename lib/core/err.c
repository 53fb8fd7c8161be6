#include "core/err.h"

const char *pk_strerror(int err)
{
    switch (err) {
    case PK_OK: return "ok";
    case PK_ERR_INVAL: return "invalid argument";
    case PK_ERR_MALFORMED: return "malformed";
    case PK_ERR_AUTH: return "authentication failed";
    case PK_ERR_REPLAY: return "replay";
    case PK_ERR_NOMEM: return "out of memory";
    case PK_ERR_CRYPTO: return "crypto library failure";
    case PK_ERR_NOTFOUND: return "not found";
    case PK_ERR_EXISTS: return "already exists";
    case PK_ERR_IO: return "i/o error";
    case PK_ERR_BUSY: return "busy, retry";
    case PK_ERR_STATE: return "unexpected in this state";
    case PK_ERR_LIMIT: return "limit reached";
    case PK_ERR_SPACE: return "buffer too small";
    case PK_ERR_DENIED: return "denied";
    case PK_ERR_EXPIRED: return "expired";
    case PK_ERR_VERSION: return "unsupported version";
    case PK_ERR_TIMEOUT: return "timed out";
    }
    return "unknown error";
}
