/* Fuzz target: the response parser (pk_trig_resp_open) and the device core's
 * input. A forged or mangled response must be rejected without changing the
 * device's identity. To reach the code behind the tag check, an input whose
 * first byte is 0xFF is treated as a plaintext: it is sealed first. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/trigger/dev.h"
#include "proto/trigger/messages.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t k1[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    static const uint8_t uid[16] = {0xA0, 0xA0, 0xA0, 0xA0, 0xA0, 0xA0, 0xA0, 0xA0,
                                    0xA0, 0xA0, 0xA0, 0xA0, 0xA0, 0xA0, 0xA0, 0xA0};
    static uint8_t buf[PK_TRIG_RESP_MAX + 64], pt[PK_TRIG_RESP_MAX];
    static pk_trig_dev_msg_t msg;
    const uint8_t *in = data;
    size_t inlen = size;

    if (size >= 1 && data[0] == 0xFF) {
        /* structured mode: cmd flags sent rand(16) arg... sealed under k1 */
        if (size < 1 + 3 + 16)
            return 0;
        size_t arglen = size - 20;
        if (arglen > PK_TRIG_ARG_MAX)
            return 0;
        uint8_t nonce[12] = {0};
        size_t outlen;
        if (pk_trig_resp_seal(k1, uid, nonce, data[1], data[2], data + 20, arglen, data[3],
                              data + 4, buf, sizeof buf, &outlen) != 0)
            return 0;
        in = buf;
        inlen = outlen;
    }
    pk_trig_resp_t r;
    int rc = pk_trig_resp_open(k1, uid, in, inlen, pt, sizeof pt, &r);
    if (rc == 0 && (inlen != PK_TRIG_RESP_FIXED + r.arglen || r.arglen > PK_TRIG_ARG_MAX))
        abort();
    if (rc == 0 && r.unsupported != (pk_trig_cmd_check(r.cmd, r.arg, r.arglen) != 0))
        abort(); /* unsupported exactly when the command check refuses it */

    pk_trig_dev_t d;
    pk_trig_dev_cfg_t cfg = {1000, 3, 1, 86400};
    uint8_t poll[PK_TRIG_POLL_LEN];
    if (pk_trig_dev_init(&d, &cfg, k1, uid, 60, 0) != 0 || pk_trig_dev_poll(&d, 0, poll) != 0)
        abort();
    int drc = pk_trig_dev_input(&d, in, inlen, 1, &msg);
    if (drc != 0 && (memcmp(d.uid, uid, 16) != 0 || d.state != PK_TRIG_DEV_WAIT))
        abort(); /* a rejected datagram changed the identity */
    if (drc == 0 && rc != 0)
        abort();
    return 0;
}
