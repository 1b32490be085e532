-- keyroll back office, schema version 6 (protocol version 2, DESIGN.md §10 point 1): the card
-- manufacturers the issuer trusts, and the chips it personalised. A chip id gets exactly one card
-- serial, ever, and a serial one chip: both are unique, and rows can be neither deleted nor re-pointed.
-- Both tables are bound to the signed audit log (`authority::rows`): manufacturers in the state digest,
-- chips row by row.

CREATE TABLE manufacturers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    -- SHA-256 of root_der, lower-case hex.
    fingerprint TEXT NOT NULL UNIQUE,
    root_der BLOB NOT NULL,
    -- 'trusted': `fab trust`; 'virtual': the convenience manufacturer of virtual reference cards,
    -- whose key is an issuer secret and whose cards the PC/SC line refuses.
    kind TEXT NOT NULL CHECK (kind IN ('trusted', 'virtual')),
    trusted_at TEXT NOT NULL
);
CREATE UNIQUE INDEX manufacturers_one_virtual ON manufacturers (kind) WHERE kind = 'virtual';

CREATE TABLE chips (
    id INTEGER PRIMARY KEY,
    chip_id TEXT NOT NULL UNIQUE,
    serial TEXT NOT NULL UNIQUE,
    manufacturer_id INTEGER NOT NULL REFERENCES manufacturers (id),
    -- SHA-256 of the factory certificates the channel authenticated.
    agreement_cert_sha256 TEXT NOT NULL,
    attestation_cert_sha256 TEXT NOT NULL,
    assigned_at TEXT NOT NULL,
    -- When the card was locked (personalisation finished).
    locked_at TEXT
);

CREATE TRIGGER chips_keep_their_serial BEFORE UPDATE OF chip_id, serial, manufacturer_id ON chips
BEGIN
    SELECT RAISE(ABORT, 'a chip id keeps its card serial forever');
END;

CREATE TRIGGER chips_are_never_deleted BEFORE DELETE ON chips
BEGIN
    SELECT RAISE(ABORT, 'a chip id keeps its card serial forever');
END;
