-- keyroll back office, schema version 8: the reconciliations `keyroll reconcile` made (issue 13 item 5,
-- DESIGN.md §10 point 6). One row per run, bound to the signed audit log (authority::rows, state scope:
-- every custodian checks them at unlock, `audit log` replays them), so `audit report` can show the latest
-- one and the next `reconcile` can hold each settlement journal to the head this one saw.
-- Sums are decimal text: they are u128 (domain::Total) and the unaccounted value is signed.

CREATE TABLE reconciliations (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,                  -- RFC 3339 UTC
    cards INTEGER NOT NULL CHECK (cards >= 0),
    issued TEXT NOT NULL,
    balances TEXT NOT NULL,
    in_flight TEXT NOT NULL,
    unaccounted TEXT NOT NULL,         -- issued - balances - in flight (0: every unit accounted for)
    transfers_in_flight INTEGER NOT NULL CHECK (transfers_in_flight >= 0),
    flags INTEGER NOT NULL CHECK (flags >= 0),
    cards_digest BLOB NOT NULL,        -- SHA-256 over the card log exports (docs/backoffice.md)
    journals TEXT NOT NULL             -- JSON: [{"name", "lines", "first", "head"}], each journal's head
);
