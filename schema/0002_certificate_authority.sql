-- keyroll back office, schema version 2: the issuer CA's root and the card certificates it issued,
-- with revocations. The CA private key lives in `secrets` (age ciphertext) like every secret.

CREATE TABLE ca (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    root_der BLOB NOT NULL,
    crl_number INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE certificates (
    id INTEGER PRIMARY KEY,
    serial TEXT NOT NULL UNIQUE,           -- certificate serial, upper-case hex
    card_serial TEXT NOT NULL,
    der BLOB NOT NULL,
    issued_at TEXT NOT NULL,
    revoked_at TEXT,
    reason TEXT
);
CREATE INDEX certificates_card ON certificates (card_serial);
