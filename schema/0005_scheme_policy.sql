-- keyroll back office, schema version 5: the scheme signing key (certified by the issuer root; its
-- private key is an age-encrypted secret like every other), the key authorisations it signed when each
-- key version was activated, and the numbered, signed scheme policies (DESIGN.md §10 points 3-5).
-- Every authorisation and policy row carries its own signature, and all three tables are bound to the signed
-- audit log (authority::rows, state scope).

CREATE TABLE scheme_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    public_key BLOB NOT NULL,          -- SEC 1 uncompressed P-256 point, as cards store it
    scheme_id BLOB NOT NULL,           -- SHA-256 of the key's SubjectPublicKeyInfo
    certificate_der BLOB NOT NULL,     -- issued by the issuer root
    created_at TEXT NOT NULL
);

CREATE TABLE key_authorisations (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('transfer', 'update')),
    key_id INTEGER NOT NULL CHECK (key_id > 0),
    authorisation BLOB NOT NULL,       -- the 146-byte wire form (docs/protocol.md)
    signed_at INTEGER NOT NULL,        -- Unix seconds
    UNIQUE (kind, key_id)
);

CREATE TABLE policies (
    id INTEGER PRIMARY KEY,
    number INTEGER NOT NULL UNIQUE CHECK (number > 0),
    policy BLOB NOT NULL,              -- the wire form, signature included
    signed_at INTEGER NOT NULL,        -- Unix seconds
    created_at TEXT NOT NULL
);
