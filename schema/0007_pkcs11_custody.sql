-- keyroll back office, schema version 7: PKCS #11 custody (DESIGN.md §11). A database created with
-- `init --pkcs11-module LIB --pkcs11-token LABEL` records here which token holds which of its keys:
-- the CA root, scheme and audit signing keys (P-256, generated in the token, sensitive and
-- non-extractable; the public key is kept to check the token's key against) and the AES key that wraps
-- the stored secrets. No private key is in the database in any form. The table is bound to the signed
-- audit log (authority::rows, state scope); a database in age custody leaves it empty.

CREATE TABLE token_keys (
    id INTEGER PRIMARY KEY,
    role TEXT NOT NULL UNIQUE CHECK (role IN ('ca', 'scheme', 'audit', 'wrap')),
    token_label TEXT NOT NULL,         -- CK_TOKEN_INFO.label
    token_serial TEXT NOT NULL,        -- CK_TOKEN_INFO.serialNumber
    module TEXT NOT NULL,              -- the PKCS #11 library used at init (KEYROLL_PKCS11_MODULE overrides)
    key_id BLOB NOT NULL,              -- CKA_ID of the key (and of a signing key's public half)
    public_key BLOB,                   -- SEC 1 uncompressed point of a signing key; NULL for the wrap key
    created_at TEXT NOT NULL
);
