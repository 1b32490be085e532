-- keyroll back office, schema version 9: the open debits each reconciliation saw (issue 13; DESIGN.md §10
-- point 6), so `policy resolve` is checked against the newest reconciliation instead of the issuer's word
-- alone. One row per open debit (neither confirmed nor refunded) of every card the run read, written with
-- its `reconciliations` row in the transaction of the `reconcile` log entry that binds both (authority::rows,
-- state scope: every custodian checks them at unlock, `audit log` replays them). A new table, not new
-- columns: the canonical row encoding covers every column, so the rows recorded before stay as signed.
-- `state` is what the run could prove about the payee's receipt (authority::reconciliations::DebitState):
--   credited        the payee's log shows the credit (same payer, same amount): only CONFIRM is missing
--   never-credited  the receipt left the payee's window and its log holds every credit it made: no card
--                   can ever credit it
--   aborted         the payee's log shows the receipt aborted: it can never be credited
--   open            the receipt is in the payee's window, neither credited nor aborted: the two cards
--                   resolve it by settling with each other
--   unproven        the payee was not among the cards read, or its log dropped credits: nothing is proved

CREATE TABLE reconciliation_debits (
    id INTEGER PRIMARY KEY,
    reconciliation INTEGER NOT NULL REFERENCES reconciliations (id),
    payer TEXT NOT NULL,               -- card serial, 16 hex digits
    payer_sequence INTEGER NOT NULL CHECK (payer_sequence >= 0),
    payee TEXT NOT NULL,
    receipt INTEGER NOT NULL CHECK (receipt >= 0),
    amount TEXT NOT NULL,              -- decimal (u64)
    state TEXT NOT NULL CHECK (state IN ('credited', 'never-credited', 'aborted', 'open', 'unproven'))
);
CREATE INDEX reconciliation_debits_by_debit ON reconciliation_debits (payer, payee, receipt, reconciliation);
