//! Issue 14 item 11, under `--json`: a settlement that changed the cards before it failed says so as a
//! structured field of the error object (`error.changes`), not only in the message. Before (session 3)
//! the JSON error had only `code`, `message` and `hint`, so a script had to parse English to learn that
//! a key had rolled (this test failed on `error.changes`).

use crate::support::cli::{Scratch, stderr};

#[test]
fn a_json_settle_error_carries_the_changes_it_made_before_failing() {
    let s = Scratch::new();
    let (files, old, new) = s.old_and_new_symmetric_cards();
    let payer_serial = s.json(&["card", "show", files[0].to_str().unwrap()])["serial"].clone();

    // The payer rolls to key 2, then the amount is above its balance.
    let o = s.run(&["--json", "settle", "--payer", &old, "--payee", &new, "--amount", "1000"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "errors go to stderr");
    let doc: serde_json::Value = serde_json::from_str(stderr(&o).trim()).expect("one JSON document on stderr");
    let e = &doc["error"];
    assert_eq!(doc["schema"], "keyroll/1");
    assert_eq!(e["code"], "settlement-refused", "{doc}");
    assert!(e["message"].as_str().unwrap().contains("rolled transfer key 2"), "{doc}");
    let roll = &e["changes"]["key_roll"];
    assert_eq!(roll["card"], "payer", "{doc}");
    assert_eq!(roll["transfer_key_id"], 2, "{doc}");
    assert_eq!(roll["serial"], payer_serial, "{doc}");
    assert_eq!(roll["how"], "symmetric", "{doc}");
    assert_eq!(e["changes"]["recovered"], serde_json::json!([]), "{doc}");

    // A failure that changed nothing carries no `changes`.
    let o = s.run(&["--json", "settle", "--payer", &old, "--payee", &new, "--amount", "1000"]);
    assert_eq!(o.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(doc["error"]["code"], "settlement-refused");
    assert!(doc["error"].get("changes").is_none(), "{doc}");
}
