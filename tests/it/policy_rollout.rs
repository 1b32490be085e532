//! Issue 12, rollout tools (DESIGN.md §10 point 4): `rollout plan --compromise-update ID` predicts
//! exactly the cards that `policy compromise update ID` strands, and `rollout status` follows how far
//! the newest policy has spread over a folder of card files.

use crate::support::cli::*;
use std::collections::BTreeMap;

#[test]
fn rollout_plan_predicts_exactly_the_cards_a_closed_update_key_strands() {
    let s = Scratch::new();
    s.init();
    // Generation 1 on update key 1, every profile; multi-key cards also carry pending transfer key 2.
    s.ok(&["key", "new", "transfer", "--pending"]);
    let old = [("sym", "symmetric"), ("multi", "multi-key"), ("hyb", "hybrid"), ("pk", "public-key")];
    for (b, p) in old {
        s.ok(&["batch", "new", b, "--profile", p, "--transfer-key-limit", "3", "--initial-balance", "100"]);
        s.ok(&["perso", "--batch", b, "--out-dir", &format!("old-{b}"), "--count", "2"]);
    }
    // The prediction, before anything is closed.
    let o = s.run(&["--json", "rollout", "plan", "--compromise-update", "1"]);
    assert_eq!(o.status.code(), Some(1), "cards would be stranded: exit 1");
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let predicted: BTreeMap<String, u64> = plan["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["batch"].as_str().unwrap().to_string(), b["stranded"].as_u64().unwrap()))
        .collect();
    assert_eq!(plan["stranded"], 4, "{plan}");
    // Nothing is closed by a plan; update key 2 is not compromised (nothing is on older keys than 1).
    let o = s.run(&["--json", "rollout", "plan", "--compromise-update", "0"]);
    assert_eq!(o.status.code(), Some(0));

    // The compromise; then transfer key 2 is activated and new cards carry it, still on update key 1.
    s.ok(&["policy", "compromise", "update", "1"]);
    s.ok(&["key", "activate", "transfer", "2"]);
    for (b, p) in [("new-hyb", "hybrid"), ("new-sym", "symmetric")] {
        s.ok(&["batch", "new", b, "--profile", p, "--transfer-key-limit", "3", "--initial-balance", "100"]);
        s.ok(&["perso", "--batch", b, "--out-dir", b, "--count", "1"]);
    }
    s.ok(&["policy", "publish", "--out", "policy.bin"]);
    let new_cards = [s.card_files("new-hyb")[0].clone(), s.card_files("new-sym")[0].clone()];
    // Every old card meets both new cards through a terminal carrying the policy; the ones that end
    // without key 2 are the stranded ones.
    let mut observed: BTreeMap<String, u64> = BTreeMap::new();
    for (b, p) in old {
        for card in s.card_files(&format!("old-{b}")) {
            for n in &new_cards {
                let o = s.run(&[
                    "settle",
                    "--payer",
                    &file_reader(&card),
                    "--payee",
                    &file_reader(n),
                    "--amount",
                    "0",
                    "--policy",
                    "policy.bin",
                ]);
                if !o.status.success() {
                    // The only refusal here is "no path": never a wrap under the closed key.
                    assert_eq!(o.status.code(), Some(1), "{p}: {}", stderr(&o));
                    assert!(stderr(&o).contains("share no key-roll path"), "{p}: {}", stderr(&o));
                }
            }
            let shown = s.json(&["card", "show", card.to_str().unwrap()]);
            assert_eq!(shown["policy_number"], 2, "{b}: the policy reached the card");
            if shown["transfer_key_id"] != 2 {
                *observed.entry(b.to_string()).or_default() += 1;
            }
        }
        observed.entry(b.to_string()).or_default();
    }
    let predicted_old: BTreeMap<String, u64> =
        predicted.into_iter().filter(|(b, _)| old.iter().any(|(o, _)| o == b)).collect();
    assert_eq!(observed, predicted_old, "rollout plan predicted exactly the stranded cards");
    // Certified cards took the public-key path from the new hybrid card.
    assert_eq!(s.json(&["card", "show", s.card_files("old-hyb")[0].to_str().unwrap()])["transfer_key_id"], 2);
}

#[test]
fn rollout_status_follows_the_policy_spreading_card_to_card() {
    let s = Scratch::new();
    s.init();
    s.ok(&["batch", "new", "b", "--profile", "symmetric", "--transfer-key-limit", "3", "--initial-balance", "100"]);
    s.ok(&["perso", "--batch", "b", "--out-dir", "victim", "--count", "1"]);
    s.ok(&["perso", "--batch", "b", "--out-dir", "cards", "--count", "3"]);
    let victim = s.card_files("victim")[0].file_stem().unwrap().to_str().unwrap().to_string();
    let status = || s.json(&["rollout", "status", "--cards", "cards"]);
    let st = status();
    assert_eq!((st["newest_policy_number"].as_u64(), st["behind_newest_policy"].as_u64()), (Some(1), Some(0)), "{st}");
    s.ok(&["policy", "block", &victim, "--reason", "file read out"]);
    s.ok(&["policy", "publish", "--out", "policy.bin"]);
    // The issuer's policy 2 exists; no card holds it yet.
    let st = status();
    assert_eq!((st["newest_policy_number"].as_u64(), st["behind_newest_policy"].as_u64()), (Some(2), Some(3)), "{st}");
    assert_eq!(st["by_policy_number"]["1"], 3);
    let c = s.card_files("cards");
    // A terminal with the file gives it to two cards ...
    let r = s.json(&[
        "settle",
        "--payer",
        &file_reader(&c[0]),
        "--payee",
        &file_reader(&c[1]),
        "--amount",
        "1",
        "--policy",
        "policy.bin",
    ]);
    assert_eq!(r["policy_spread"], "both");
    let st = status();
    assert_eq!(st["behind_newest_policy"], 1, "{st}");
    assert_eq!((st["by_policy_number"]["1"].as_u64(), st["by_policy_number"]["2"].as_u64()), (Some(1), Some(2)));
    // ... and one of them to the third through a terminal without it.
    let r = s.json(&["settle", "--payer", &file_reader(&c[1]), "--payee", &file_reader(&c[2]), "--amount", "1"]);
    assert_eq!(r["policy_spread"], "payee");
    let st = status();
    assert_eq!(st["behind_newest_policy"], 0, "{st}");
    // Now none of them deals with the blocked card, whatever the terminal carries.
    let v = s.card_files("victim")[0].clone();
    let o = s.run(&["--json", "settle", "--payer", &file_reader(&v), "--payee", &file_reader(&c[2]), "--amount", "1"]);
    assert_eq!(o.status.code(), Some(1));
    let e: serde_json::Value = serde_json::from_slice(&o.stderr).unwrap();
    assert_eq!(e["error"]["code"], "blocked", "{e}");
}
