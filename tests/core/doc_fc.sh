#!/usr/bin/env bash
# The registry table of docs/protocol.md lists exactly the FC codes of
# lib/core/kdf_fc.h (the code's registry is checked by test_kdf).
set -u
root=$1
code=$(grep -oE '^#define PK_FC_[A-Z0-9_]+ +0x[0-9A-Fa-f]{2}' "$root/lib/core/kdf_fc.h" | awk '{print toupper($3)}' | sed 's/^0X/0x/' | sort -u)
doc=$(awk '/^### Registry/{on=1;next} /^### /{on=0} on' "$root/docs/protocol.md" | grep -oE '^\| 0x[0-9A-Fa-f]{2} ' | awk '{print toupper($2)}' | sed 's/^0X/0x/' | sort -u)
if [ "$code" = "$doc" ]; then
    echo "1 passed, 0 failed"
    exit 0
fi
echo "docs/protocol.md registry and kdf_fc.h differ:"
diff <(echo "$code") <(echo "$doc")
echo "0 passed, 1 failed"
exit 1
