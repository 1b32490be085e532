//! Known-answer and conformance tests for keyroll's symmetric crypto glue: RFC 4493 AES-CMAC (from
//! `../shared/vectors/cmac`), RFC 5297 Appendix A AES-SIV, and the Wycheproof AES-CMAC file — all run
//! through keyroll's own wrappers (`crypto::mac`, `crypto::envelope`).

use keyroll::crypto::secret::SecretBytes;
use keyroll::crypto::{Secret16, envelope, mac};
use std::path::PathBuf;

fn vectors() -> Option<PathBuf> {
    let p = crate::support::vectors_dir();
    if p.is_dir() {
        Some(p)
    } else {
        crate::support::vectors_missing(&format!("conformance vectors at {}", p.display()));
        None
    }
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

#[test]
fn rfc4493_aes_cmac_examples() {
    let Some(dir) = vectors() else { return };
    let text = std::fs::read_to_string(dir.join("cmac/cmac-rfc4493.txt")).unwrap();
    let mut checked = 0;
    for record in text.split("\n\n") {
        let field = |name: &str| {
            record.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        let (Some(key), Some(msg), Some(tag)) = (field("Key"), field("Msg"), field("Tag")) else { continue };
        let key = Secret16::from_slice(&h(&key)).unwrap();
        let (msg, tag) = (h(&msg), h(&tag));
        assert_eq!(mac::cmac(&key, &[&msg]).to_vec(), tag, "RFC 4493 example with {}-byte message", msg.len());
        // Split input gives the same MAC (keyroll MACs over several parts).
        let (a, b) = msg.split_at(msg.len() / 3);
        assert_eq!(mac::cmac(&key, &[a, b]).to_vec(), tag);
        assert!(mac::verify(&key, &[&msg], &tag).is_ok());
        let mut bad = tag.clone();
        bad[15] ^= 1;
        assert!(mac::verify(&key, &[&msg], &bad).is_err());
        checked += 1;
    }
    assert_eq!(checked, 4, "the four RFC 4493 examples");
}

#[test]
fn rfc5297_aes_siv_appendix_a() {
    // A.1 deterministic authenticated encryption.
    let key = SecretBytes::new(h("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0 f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff"));
    let ad = h("10111213 14151617 18191a1b 1c1d1e1f 20212223 24252627");
    let pt = h("11223344 55667788 99aabbcc ddee");
    let ct = h("85632d07 c6e8f37f 950acd32 0a2ecc93 40c02b96 90c4dc04 daef7f6a fe5c");
    assert_eq!(envelope::seal_with(&key, &[&ad], &pt), ct);
    assert_eq!(envelope::open_with(&key, &[&ad], &ct).unwrap().expose(), &pt[..]);
    // A.2 nonce-based: the nonce is the last header (RFC 5297 §3).
    let key = SecretBytes::new(h("7f7e7d7c 7b7a7978 77767574 73727170 40414243 44454647 48494a4b 4c4d4e4f"));
    let ad1 = h("00112233 44556677 8899aabb ccddeeff deaddada deaddada ffeeddcc bbaa9988 77665544 33221100");
    let ad2 = h("10203040 50607080 90a0");
    let nonce = h("09f91102 9d74e35b d84156c5 635688c0");
    let pt =
        h("74686973 20697320 736f6d65 20706c61 696e7465 78742074 6f20656e 63727970 74207573 696e6720 5349562d 414553");
    let ct = h(
        "7bdb6e3b 432667eb 06f4d14b ff2fbd0f cb900f2f ddbe4043 26601965 c889bf17 dba77ceb 094fa663 b7a3f748 ba8af829 ea64ad54 4a272e9c 485b62a3 fd5c0d",
    );
    assert_eq!(envelope::seal_with(&key, &[&ad1, &ad2, &nonce], &pt), ct);
    assert_eq!(envelope::open_with(&key, &[&ad1, &ad2, &nonce], &ct).unwrap().expose(), &pt[..]);
    assert!(envelope::open_with(&key, &[&ad1, &nonce], &ct).is_err());
}

#[test]
fn wycheproof_aes_cmac() {
    let Some(dir) = vectors() else { return };
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("wycheproof/aes_cmac_test.json")).unwrap()).unwrap();
    let (mut valid, mut invalid, mut unsupported) = (0, 0, 0);
    for g in doc["testGroups"].as_array().unwrap() {
        for t in g["tests"].as_array().unwrap() {
            let key = h(t["key"].as_str().unwrap());
            let msg = h(t["msg"].as_str().unwrap());
            let tag = h(t["tag"].as_str().unwrap());
            let result = t["result"].as_str().unwrap();
            let id = t["tcId"].as_u64().unwrap();
            let Some(key) = Secret16::from_slice(&key) else {
                // keyroll's MACs are AES-128 only: other key sizes cannot even be constructed.
                if result == "valid" {
                    unsupported += 1;
                } else {
                    invalid += 1;
                }
                continue;
            };
            let ok = mac::verify(&key, &[&msg], &tag).is_ok() && tag.len() == 16;
            match result {
                "valid" => {
                    assert!(ok, "tcId {id}: valid tag rejected");
                    assert_eq!(mac::cmac(&key, &[&msg]).to_vec(), tag, "tcId {id}");
                    valid += 1;
                }
                "invalid" => {
                    assert!(!ok, "tcId {id}: invalid tag accepted ({})", t["comment"]);
                    invalid += 1;
                }
                other => panic!("tcId {id}: unexpected result {other}"),
            }
        }
    }
    eprintln!(
        "Wycheproof AES-CMAC: {valid} valid accepted, {invalid} invalid rejected, {unsupported} valid with non-128-bit keys not supported"
    );
    // Pinned to the vector file at C2SP/wycheproof dac1dd47: every case ran.
    assert_eq!((valid, invalid, unsupported), (21, 248, 42), "vector counts changed");
}
