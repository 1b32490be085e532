-- keyroll back office, schema version 3: when a reserved serial was handed to a physical card
-- (INITIALIZE), so a personalisation line never gives the same serial to a second card.

ALTER TABLE cards ADD COLUMN initialised_at TEXT;
