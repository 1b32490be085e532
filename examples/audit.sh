#!/usr/bin/env bash
# An auditor's session: export the issuer root and CRL, verify every card certificate in the database and a
# few as files, verify the audit log (pinned to the audit key fingerprint), and print the report.
# Usage: examples/audit.sh [WORKDIR]   (KEYROLL=path/to/keyroll to pick the binary)
set -euo pipefail
KEYROLL=${KEYROLL:-keyroll}
work=${1:-$(mktemp -d)}
mkdir -p "$work" && cd "$work"
export KEYROLL_DB=$work/issuer.db KEYROLL_IDENTITY=$work/custodian.identity

fingerprint=$("$KEYROLL" --json init --issuer "Example Transit" --identity-out "$KEYROLL_IDENTITY" \
  | sed -n 's/.*"audit_key_fingerprint": "\([0-9a-f]*\)".*/\1/p')
"$KEYROLL" batch new cards --profile public-key --transfer-key-limit 3 --initial-balance 100
"$KEYROLL" perso --batch cards --out-dir cards --count 4
lost=$(ls cards | head -n 1 | sed 's/\.card$//')
"$KEYROLL" cert revoke "$lost" --reason key-compromise

"$KEYROLL" cert ca --out root.pem
# The auditor's outside anchor: the published root (here, the file just written; in life, from the issuer).
root_sha=$(openssl x509 -in root.pem -outform DER | sha256sum | cut -d' ' -f1)
"$KEYROLL" cert crl --out crl.pem
"$KEYROLL" --json cert list | sed -n 's/.*"pem": "\(.*\)".*/\1/p' | head -n 2 | sed 's/\\n/\n/g' > two-cards.pem

# Every certificate in the database: the revoked one is listed INVALID with its reason; revocations are
# expected, so the verdict (the same as audit report's) passes unless something else fails.
"$KEYROLL" audit chain --all --anchor root.pem
# Certificates as files, with the auditor's own copy of the anchor and CRL (exit 1 if the revoked
# card is among them, 0 otherwise; 2 would be an error).
rc=0; "$KEYROLL" audit chain two-cards.pem --anchor root.pem --crl crl.pem || rc=$?
[ "$rc" -le 1 ] || { echo "audit chain on files failed with $rc"; exit 1; }
"$KEYROLL" audit log --expect-key "$fingerprint" --checkpoint "$work/auditor.checkpoint"
"$KEYROLL" audit report --expect-root "$root_sha" --checkpoint "$work/auditor.checkpoint"
echo "audit done"
