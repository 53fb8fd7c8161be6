#!/bin/bash
# ctest entry of the independent Python registration/direct-link device:
# picks a Python 3 that has the `cryptography` package (scripts/deps.sh
# installs Debian's python3-cryptography) and runs test_regdev.py against
# PROXKEY.
#   run.sh PROXKEY
set -u
here=$(dirname "$0")
export PYTHONDONTWRITEBYTECODE=1 # nothing written into the source tree
for py in ${PYTHON:-} python3 /usr/bin/python3; do
    if "$py" -c 'from cryptography.hazmat.primitives.ciphers.aead import AESGCM' 2>/dev/null; then
        exec "$py" "$here/test_regdev.py" "$@"
    fi
done
echo "FAIL: no python3 with the cryptography package (apt-get install python3-cryptography)"
exit 1
