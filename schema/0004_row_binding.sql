-- keyroll back office, schema version 4: every security-relevant row is bound to the signed audit log
-- (docs/backoffice.md). Each entry records the rows it wrote (`bound`: table, id and SHA-256 of the
-- row's canonical encoding) and the state digest after it (`state`); the row hash covers both.
-- Entries written before this version have neither; the first custodian to unlock the database
-- afterwards verifies the whole log and appends one entry that binds every existing row.

ALTER TABLE audit_log ADD COLUMN bound BLOB;
ALTER TABLE audit_log ADD COLUMN state BLOB;

-- Revocations are part of the state digest; this keeps reading them independent of the card count.
CREATE INDEX certificates_revoked ON certificates (id) WHERE revoked_at IS NOT NULL OR reason IS NOT NULL;

-- CRL reasons as RFC 5280 §5.3.1 names (`keyCompromise`); they were Rust Debug names (`KeyCompromise`).
UPDATE certificates SET reason = CASE reason
    WHEN 'Unspecified' THEN 'unspecified'
    WHEN 'KeyCompromise' THEN 'keyCompromise'
    WHEN 'CaCompromise' THEN 'cACompromise'
    WHEN 'AffiliationChanged' THEN 'affiliationChanged'
    WHEN 'Superseded' THEN 'superseded'
    WHEN 'CessationOfOperation' THEN 'cessationOfOperation'
    WHEN 'CertificateHold' THEN 'certificateHold'
    WHEN 'RemoveFromCRL' THEN 'removeFromCRL'
    WHEN 'PrivilegeWithdrawn' THEN 'privilegeWithdrawn'
    WHEN 'AaCompromise' THEN 'aACompromise'
    ELSE reason END
WHERE reason IS NOT NULL;
