-- keyroll back office, schema version 1: issuer, custodians, secrets, key versions, batches, cards,
-- personalisation runs and the hash-chained audit log. Secrets are age ciphertext only.

CREATE TABLE issuer (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    -- SEC 1 uncompressed P-256 public key that signs the audit log head.
    audit_public_key BLOB NOT NULL
);

CREATE TABLE custodians (
    id INTEGER PRIMARY KEY,
    recipient TEXT NOT NULL UNIQUE
);

-- Named secrets (personalisation master, audit signing key, CA keys), age-encrypted to the custodians.
CREATE TABLE secrets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    ciphertext BLOB NOT NULL
);

CREATE TABLE keys (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('transfer', 'update')),
    key_id INTEGER NOT NULL CHECK (key_id > 0),
    state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retired')),
    kcv TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at TEXT NOT NULL,
    activated_at TEXT,
    retired_at TEXT,
    UNIQUE (kind, key_id)
);

CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    profile TEXT NOT NULL CHECK (profile IN ('symmetric', 'public-key', 'hybrid', 'multi-key')),
    transfer_key_id_limit INTEGER NOT NULL CHECK (transfer_key_id_limit > 0),
    transfer_key_id INTEGER NOT NULL,
    update_key_id INTEGER NOT NULL,
    initial_balance INTEGER NOT NULL CHECK (initial_balance >= 0),
    max_balance INTEGER NOT NULL CHECK (max_balance >= initial_balance AND max_balance > 0),
    created_at TEXT NOT NULL
);

CREATE TABLE perso_runs (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL REFERENCES batches (id),
    target TEXT NOT NULL,        -- output directory or reader name
    count INTEGER NOT NULL CHECK (count > 0),
    owner_pid INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT
);

CREATE TABLE cards (
    id INTEGER PRIMARY KEY,
    serial TEXT NOT NULL UNIQUE,
    batch_id INTEGER NOT NULL REFERENCES batches (id),
    run_id INTEGER NOT NULL REFERENCES perso_runs (id),
    seq INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'personalised')),
    profile TEXT NOT NULL,
    transfer_key_id INTEGER NOT NULL,
    update_key_id INTEGER,
    transfer_key_id_limit INTEGER NOT NULL,
    issued_value INTEGER NOT NULL,
    file TEXT,
    reserved_at TEXT NOT NULL,
    personalised_at TEXT,
    UNIQUE (run_id, seq)
);
CREATE INDEX cards_batch ON cards (batch_id, state);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);

CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_id INTEGER NOT NULL,
    last_hash BLOB NOT NULL,
    signature BLOB NOT NULL
);
