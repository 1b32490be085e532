#!/usr/bin/env bash
# A personalisation run: batches of two profiles, a run interrupted by kill -9 and finished by the same
# command, on-card key generation with certificates for the hybrid batch, and a look at the result.
# Usage: examples/personalisation-run.sh [WORKDIR]   (KEYROLL=path/to/keyroll to pick the binary)
set -euo pipefail
KEYROLL=${KEYROLL:-keyroll}
work=${1:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
export KEYROLL_DB=$work/issuer.db KEYROLL_IDENTITY=$work/custodian.identity

"$KEYROLL" init --issuer "Example Transit" --identity-out "$KEYROLL_IDENTITY"
"$KEYROLL" batch new hybrid-2026 --profile hybrid --transfer-key-limit 4 --initial-balance 1000 --max-balance 50000
"$KEYROLL" batch new multi-2026 --profile multi-key --transfer-key-limit 4 --initial-balance 1000

# A run killed mid-way (the line lost power) ...
"$KEYROLL" perso --batch multi-2026 --out-dir cards --count 2000 2>/dev/null &
pid=$!
until [ "$(ls cards 2>/dev/null | wc -l)" -ge 5 ] || ! kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
echo "after the kill: $(ls cards | wc -l) card file(s)"
# ... is finished by the same command: no duplicate, nothing lost.
if [ "$(ls cards | wc -l)" -lt 2000 ]; then
  "$KEYROLL" perso --batch multi-2026 --out-dir cards --count 2000
else
  echo "(this machine finished the run before the kill arrived)"
fi
"$KEYROLL" perso --batch hybrid-2026 --out-dir cards --count 3
"$KEYROLL" batch list
"$KEYROLL" cert list
"$KEYROLL" card show "$(ls cards/*.card | tail -n 1)"
echo "personalised $(ls cards/*.card | wc -l) cards"
