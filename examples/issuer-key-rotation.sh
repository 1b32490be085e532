#!/usr/bin/env bash
# An issuer's transfer key rotation, end to end on reference card files:
# plan the roll, activate it, personalise a batch on the new key, let the key spread card to card,
# check nothing was stranded and every generation interoperates, and audit the log.
# Usage: examples/issuer-key-rotation.sh [WORKDIR]   (KEYROLL=path/to/keyroll to pick the binary)
set -euo pipefail
KEYROLL=${KEYROLL:-keyroll}
work=${1:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
export KEYROLL_DB=$work/issuer.db KEYROLL_IDENTITY=$work/custodian.identity

"$KEYROLL" init --issuer "Example Transit" --identity-out "$KEYROLL_IDENTITY"
"$KEYROLL" batch new first --profile symmetric --transfer-key-limit 3 --initial-balance 500
"$KEYROLL" perso --batch first --out-dir cards --count 4

# Prepare transfer key 2 without making it live, and check what a roll to it would strand.
"$KEYROLL" key new transfer --pending
"$KEYROLL" rollout plan --transfer-key 2          # exit 1 would mean stranded cards

"$KEYROLL" key activate transfer 2
"$KEYROLL" batch new second --profile symmetric --transfer-key-limit 5 --initial-balance 500
"$KEYROLL" perso --batch second --out-dir cards --count 1
"$KEYROLL" rollout verify                         # every generation pair through the real terminal

new=$(ls cards/*.card | tail -n 1)
for old in $(ls cards/*.card | head -n 4); do
  "$KEYROLL" settle --payer "file:$new" --payee "file:$old" --amount 10
done
"$KEYROLL" rollout status --cards cards
"$KEYROLL" key retire transfer 1
"$KEYROLL" key list
"$KEYROLL" audit log
echo "rotation complete"
