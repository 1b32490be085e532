//! Issue 13, session 5: settlement journal lines carry the certified payer's value signature
//! (`keyroll-journal/2`), and `reconcile --journal` verifies it under the payer's certificate in the
//! issuer database. Before, a journal line carried the token's MAC only, which the back office cannot
//! check (it is made under the generation's shared transfer key): anyone could rewrite a journal into a
//! valid hash chain. Now a rewritten line with a good chain but a bad (or removed) signature is flagged.

use crate::support::cli::{Scratch, file_reader, stderr};
use keyroll::protocol::ledger::{self, GENESIS, JournalLine};

/// Rewrite line `i` (0-based) of a journal with `edit` and re-chain every line after it: a valid hash
/// chain, as anyone can build one.
fn rewrite(text: &str, i: usize, edit: impl Fn(&mut JournalLine)) -> String {
    let mut lines: Vec<JournalLine> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    edit(&mut lines[i]);
    let mut prev = GENESIS.to_string();
    let mut out = String::new();
    for l in &mut lines {
        l.prev = prev.clone();
        let raw = serde_json::to_string(l).unwrap();
        prev = ledger::line_hash(&raw);
        out.push_str(&raw);
        out.push('\n');
    }
    out
}

/// `reconcile --journal` exit status and flags, without those about the journal's recorded head: every
/// rewrite below has the honest journal's first line, so it is also held to the head the honest run
/// recorded (and flagged for not extending it; `reconcile_record.rs` tests that).
fn flags_of(s: &Scratch, journal: &str) -> (Option<i32>, Vec<serde_json::Value>) {
    let o = s.run(&["--json", "reconcile", "--cards", "cards", "--journal", journal]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", stderr(&o)));
    let flags = v["flags"].as_array().cloned().unwrap_or_default();
    let own =
        flags.into_iter().filter(|f| !f["why"].as_str().unwrap_or("").contains("does not extend the head")).collect();
    (o.status.code(), own)
}

#[test]
fn a_forged_journal_line_with_a_good_chain_but_a_bad_signature_is_flagged() {
    let s = Scratch::new();
    let files = s.init_with_cards("public-key", 2);
    let spec = |i: usize| file_reader(&files[i]);
    for (payer, payee, amount) in [(0, 1, "30"), (1, 0, "5"), (0, 1, "7")] {
        s.ok(&["settle", "--payer", &spec(payer), "--payee", &spec(payee), "--amount", amount, "--journal", "j.jsonl"]);
    }
    let honest = std::fs::read_to_string(s.path("j.jsonl")).unwrap();
    let (lines, _) = ledger::verify_journal(&honest).unwrap();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert_eq!(l.format, ledger::JOURNAL_FORMAT, "{honest}");
        assert_eq!(l.record.signature.as_ref().map(String::len), Some(128), "a 64-byte signature: {honest}");
        assert_eq!(l.record.transfer_key_id, Some(1), "{honest}");
    }
    // The honest journal: every signature verifies under the payer's certificate.
    let (code, flags) = flags_of(&s, "j.jsonl");
    assert_eq!((code, flags.len()), (Some(0), 0), "{flags:?}");

    // Line 2's signature forged (one bit), every later line re-chained: a valid chain, flagged at line 2.
    let forged = rewrite(&honest, 1, |l| {
        let mut sig = hex::decode(l.record.signature.as_ref().unwrap()).unwrap();
        sig[10] ^= 1;
        l.record.signature = Some(hex::encode(sig));
    });
    assert!(ledger::verify_journal(&forged).is_ok(), "the forged journal is a valid chain");
    std::fs::write(s.path("forged.jsonl"), &forged).unwrap();
    let (code, flags) = flags_of(&s, "forged.jsonl");
    assert_eq!(code, Some(1));
    assert_eq!(flags.len(), 1, "{flags:?}");
    assert_eq!((flags[0]["flag"].as_str(), flags[0]["line"].as_u64()), (Some("journal"), Some(2)), "{flags:?}");
    assert!(flags[0]["why"].as_str().unwrap().contains("does not verify under the payer"), "{flags:?}");

    // Another payer's valid signature moved onto the line (line 1's, from the other card): flagged.
    let first_sig = lines[0].record.signature.clone();
    let swapped = rewrite(&honest, 1, |l| l.record.signature = first_sig.clone());
    std::fs::write(s.path("swapped.jsonl"), &swapped).unwrap();
    let (code, flags) = flags_of(&s, "swapped.jsonl");
    assert_eq!((code, flags.len()), (Some(1), 1), "{flags:?}");

    // The signature removed (a certified payer always signs): flagged.
    let stripped = rewrite(&honest, 2, |l| l.record.signature = None);
    std::fs::write(s.path("stripped.jsonl"), &stripped).unwrap();
    let (code, flags) = flags_of(&s, "stripped.jsonl");
    assert_eq!((code, flags.len()), (Some(1), 1), "{flags:?}");
    assert!(flags[0]["why"].as_str().unwrap().contains("no value signature"), "{flags:?}");
    assert_eq!(flags[0]["line"].as_u64(), Some(3));

    // The last line rewritten as a version 1 line to shed its signature: a terminal never writes an
    // older version after a newer one, so the journal does not verify.
    let v1 = |l: &mut JournalLine| {
        l.format = ledger::JOURNAL_FORMAT_V1.into();
        l.record.signature = None;
        l.record.transfer_key_id = None;
    };
    let downgraded = rewrite(&honest, 2, v1);
    std::fs::write(s.path("downgraded.jsonl"), &downgraded).unwrap();
    let (code, flags) = flags_of(&s, "downgraded.jsonl");
    assert_eq!((code, flags.len()), (Some(1), 1), "{flags:?}");
    assert!(flags[0]["why"].as_str().unwrap().contains("after a"), "{flags:?}");

    // A journal an older terminal wrote (version 1 lines only, no signatures) still reads and
    // reconciles: its lines are held to the cards' logs as before.
    let mut old = honest.clone();
    for i in 0..3 {
        old = rewrite(&old, i, v1);
    }
    assert!(old.lines().all(|l| l.contains("\"format\":\"keyroll-journal/1\"")), "{old}");
    std::fs::write(s.path("old.jsonl"), &old).unwrap();
    let (code, flags) = flags_of(&s, "old.jsonl");
    assert_eq!((code, flags.len()), (Some(0), 0), "{flags:?}");
}
