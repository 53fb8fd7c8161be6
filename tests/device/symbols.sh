#!/usr/bin/env bash
# The device library's external references: every undefined symbol of
# libproxkey-device.a that the archive does not define itself must be
# libcrypto, a mem* routine or compiler instrumentation. No heap, no I/O, no
# clock, no logging (device.h's contract, checked at link level).
set -u
lib=$1
defined=$(nm -g --defined-only "$lib" 2>/dev/null | awk 'NF>=3{print $3}' | sort -u)
undef=$(nm -g -u "$lib" 2>/dev/null | awk '{print $NF}' | grep -v ':$' | sort -u)
ext=$(comm -23 <(echo "$undef") <(echo "$defined"))
# Also allowed, each for a stated reason: explicit_bzero (pk_wipe), pthread_once (pk_crypto_init's
# one-time fetch), abort (our own bugs, STYLE §4), snprintf (pk_mk_entry_format
# into the caller's buffer), strcmp (trigger command names).
allowed='^(EVP_|OSSL_|OPENSSL_|CRYPTO_|ERR_|RAND_bytes$|pthread_once$|explicit_bzero$|abort$|snprintf$|strcmp$|strlen$|__start___sancov|__stop___sancov|memcpy$|memset$|memcmp$|memmove$|memchr$|__memcpy_chk$|__memset_chk$|__asan|__ubsan|__sanitizer|__sancov|__stack_chk_fail$|_GLOBAL_OFFSET_TABLE_$)'
bad=$(echo "$ext" | grep -Ev "$allowed" | grep -v '^$')
n=$(echo "$ext" | grep -c .)
if [ "$n" -lt 5 ]; then echo "FAIL: found only $n external symbols (nm broken?)"; exit 1; fi
if [ -n "$bad" ]; then
    echo "FAIL: libproxkey-device references symbols outside its contract:"
    echo "$bad"
    exit 1
fi
for want in EVP_EncryptUpdate pk_reg_dev_start pk_link_connect pk_mk_client_start pk_trig_dev_poll pk_device_reg_import; do
    if ! echo "$ext $defined" | grep -qw "$want"; then echo "FAIL: $want missing"; exit 1; fi
done
for absent in pk_reg_node_input pk_trig_srv_input pk_store_open pk_udp_open; do
    if echo "$defined" | grep -qw "$absent"; then echo "FAIL: $absent is in the device library"; exit 1; fi
done
echo "ok: $n external symbols, all libcrypto/mem*/instrumentation"
