#!/bin/sh
# Installs what proxkey needs to build, test and run, from Debian's packages.
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -eu

PKGS="build-essential cmake pkg-config clang clang-format libclang-rt-14-dev llvm \
libssl-dev openssl libsqlite3-dev sqlite3 libpq-dev postgresql \
python3 python3-cryptography iproute2 procps"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

[ -z "$missing" ] && exit 0

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "proxkey: missing packages:$missing" >&2
    echo "proxkey: run as root:  apt-get update && $cmd" >&2
    exit 1
fi
echo "proxkey: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
# shellcheck disable=SC2086
$cmd >&2
