#!/bin/bash
# ctest entry of the independent Python trigger device: picks a Python 3
# that has the `cryptography` package (scripts/deps.sh installs Debian's
# python3-cryptography) and runs test_pydev.py against TRIGGER_GTS.
#   run.sh TRIGGER_GTS
set -u
here=$(dirname "$0")
export PYTHONDONTWRITEBYTECODE=1 # nothing written into the source tree
for py in ${PYTHON:-} python3 /usr/bin/python3; do
    if "$py" -c 'from cryptography.hazmat.primitives.ciphers.aead import AESGCM' 2>/dev/null; then
        exec "$py" "$here/test_pydev.py" "$@"
    fi
done
echo "FAIL: no python3 with the cryptography package (apt-get install python3-cryptography)"
exit 1
