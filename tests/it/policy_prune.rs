//! Issue 12, the prune path end to end (DESIGN.md §10 point 4): once every transfer key a blocked card's
//! generation could hold is retired, the next policy drops its entry (the list is bounded), and cards
//! adopt that policy. A pruned card must stay unable to move value: before, a card never looked at
//! "lowest transfer key id still alive" for itself, so a compromised card whose entry was pruned paid
//! its own generation's cards again as soon as they held the pruned policy.

use crate::support::cli::*;
use std::path::Path;

#[test]
fn a_pruned_blocked_card_stays_unable_to_move_value() {
    let s = Scratch::new();
    s.init();
    // Generation 1: transfer key 1, limit 2 (it can never hold a key above 2).
    s.ok(&["batch", "new", "old", "--profile", "symmetric", "--transfer-key-limit", "2", "--initial-balance", "100"]);
    s.ok(&["perso", "--batch", "old", "--out-dir", "old", "--count", "3"]);
    let old = s.card_files("old");
    let serial = |p: &Path| s.json(&["card", "show", p.to_str().unwrap()])["serial"].as_str().unwrap().to_string();
    let policy_of = |p: &Path| s.json(&["card", "show", p.to_str().unwrap()])["policy_number"].as_u64().unwrap();
    let settle = |payer: &Path, payee: &Path, policy: &str| {
        s.run(&[
            "settle",
            "--payer",
            &file_reader(payer),
            "--payee",
            &file_reader(payee),
            "--amount",
            "5",
            "--policy",
            policy,
        ])
    };
    // The compromised card is blocked: its peers refuse it once they hold the policy.
    let bad = serial(&old[0]);
    s.ok(&["policy", "block", &bad, "--reason", "file read out"]);
    s.ok(&["policy", "publish", "--out", "p-block.bin"]);
    let o = settle(&old[0], &old[1], "p-block.bin");
    assert_eq!(o.status.code(), Some(1), "a blocked card is refused: {}", stderr(&o));
    assert!(stderr(&o).contains("policy blocks"), "{}", stderr(&o));
    assert!(
        s.run(&["settle", "--payer", &file_reader(&old[1]), "--payee", &file_reader(&old[2]), "--amount", "5"])
            .status
            .success()
    );

    // Generation 2 (transfer key 3, limit 9); keys 1 and 2 retired: generation 1 is dead.
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["key", "new", "transfer"]);
    s.ok(&["batch", "new", "new", "--profile", "symmetric", "--transfer-key-limit", "9", "--initial-balance", "100"]);
    s.ok(&["perso", "--batch", "new", "--out-dir", "new", "--count", "2"]);
    s.ok(&["key", "retire", "transfer", "1", "--force"]);
    s.ok(&["key", "retire", "transfer", "2", "--force"]);
    s.ok(&["policy", "publish", "--out", "p-pruned.bin"]);
    let shown = s.json(&["policy", "show", "p-pruned.bin"]);
    assert_eq!(shown["min_transfer_key_id"], 3, "{shown}");
    assert_eq!(shown["blocked"].as_array().map(Vec::len), Some(0), "the dead generation's entry is pruned: {shown}");
    let publish = s.sqlite("SELECT detail FROM audit_log WHERE action = 'policy publish' ORDER BY id DESC LIMIT 1");
    assert!(publish.contains("pruned") && publish.contains(&bad), "the audit log names the pruned card: {publish}");

    // The pruned policy spreads: live cards adopt it.
    let new = s.card_files("new");
    assert!(settle(&new[0], &new[1], "p-pruned.bin").status.success());
    assert_eq!((policy_of(&new[0]), policy_of(&new[1])), (3, 3));

    // A peer of the pruned card takes the pruned policy (from a terminal that carries it) ...
    let o = settle(&old[1], &old[2], "p-pruned.bin");
    assert_eq!(policy_of(&old[1]), 3, "the policy reached the dead generation: {}", stderr(&o));
    // ... and the pruned compromised card still cannot pay it or be paid by it.
    let before =
        (s.json(&["card", "show", old[0].to_str().unwrap()]), s.json(&["card", "show", old[1].to_str().unwrap()]));
    for (payer, payee) in [(&old[0], &old[1]), (&old[1], &old[0])] {
        let o = s.run(&["settle", "--payer", &file_reader(payer), "--payee", &file_reader(payee), "--amount", "5"]);
        assert_eq!(o.status.code(), Some(1), "a pruned card moves no value: {}", stderr(&o));
    }
    let after =
        (s.json(&["card", "show", old[0].to_str().unwrap()]), s.json(&["card", "show", old[1].to_str().unwrap()]));
    assert_eq!(before.0["balance"], after.0["balance"]);
    assert_eq!(before.1["balance"], after.1["balance"]);
    // Live cards are unaffected.
    assert!(
        s.run(&["settle", "--payer", &file_reader(&new[0]), "--payee", &file_reader(&new[1]), "--amount", "5"])
            .status
            .success()
    );
}
