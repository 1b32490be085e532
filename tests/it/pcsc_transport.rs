//! PC/SC end to end: a small test card served by `transport::vpcd::serve` into pcscd's virtual reader,
//! reached through `transport::pcsc::PcscChannel` and `transport::exchange`, and through `opensc-tool`
//! as an outside client. Needs pcscd and vsmartcard-vpcd (the harness starts pcscd when none runs).

#![cfg(feature = "pcsc")]

use crate::support::pcscd;

use keyroll::protocol::command::{Command, PersoItem};
use keyroll::protocol::{AID, CommandApdu, Mute, SmartCard, StatusWord};
use keyroll::transport::pcsc::{PcscChannel, list_readers, wait_for_card, wait_for_card_removal};
use keyroll::transport::{CardChannel, Trace, TransportError, exchange};
use pcscd::{ServedCard, acquire};
use std::process::Command as Process;
use std::time::Duration;

/// Long enough for pcscd's 400 ms presence poll, short enough that a broken test fails fast.
const WAIT: Option<Duration> = Some(Duration::from_secs(5));

/// A T=1 ATR: TS 3B, T0 80, TD1 80, TD2 01 (T=1), TCK 01.
const ATR: [u8; 5] = [0x3B, 0x80, 0x80, 0x01, 0x01];
/// Length of GET CARD INFO's answer: more than two GET RESPONSE rounds.
const INFO_LEN: usize = 600;

const INS_ECHO: u8 = 0xE0;
const INS_MUTE: u8 = 0xEE;

/// A card just rich enough to test the transport: SELECT of keyroll's AID, GET CARD INFO answering
/// `INFO_LEN` bytes through 61XX / GET RESPONSE, PERSO STORE accepting a command chain and answering
/// its total length, ECHO (80 E0) answering its data and a session counter, MUTE (80 EE) going mute
/// like a torn card, 6D00 for anything else. Session state is cleared on power off and reset.
#[derive(Default)]
struct TestCard {
    counter: u32,
    pending: Vec<u8>,
    chain: Vec<u8>,
    power_ons: u32,
}

impl TestCard {
    fn session_clear(&mut self) {
        self.counter = 0;
        self.pending.clear();
        self.chain.clear();
    }

    /// Up to `le` bytes of the pending answer, with 61XX while more remains.
    fn next_part(&mut self, le: usize) -> Vec<u8> {
        let n = le.min(self.pending.len());
        let mut r: Vec<u8> = self.pending.drain(..n).collect();
        let left = self.pending.len();
        let sw = if left == 0 { StatusWord::Ok } else { StatusWord::MoreData(left.min(256) as u8) };
        r.extend_from_slice(&sw.to_u16().to_be_bytes());
        r
    }
}

fn sw(sw: StatusWord) -> Vec<u8> {
    sw.to_u16().to_be_bytes().to_vec()
}

impl SmartCard for TestCard {
    fn atr(&self) -> Vec<u8> {
        ATR.to_vec()
    }
    fn power_on(&mut self) {
        self.power_ons += 1;
        self.session_clear();
    }
    fn power_off(&mut self) {
        self.session_clear();
    }
    fn reset(&mut self) {
        self.session_clear();
    }
    fn process(&mut self, raw: &[u8]) -> Result<Vec<u8>, Mute> {
        let Ok(apdu) = CommandApdu::parse(raw) else {
            return Ok(sw(StatusWord::WrongLength));
        };
        let le = apdu.le.unwrap_or(0);
        Ok(match (apdu.cla & !0x10, apdu.ins) {
            (0x00, 0xA4) if apdu.data == AID => sw(StatusWord::Ok),
            (0x00, 0xA4) => sw(StatusWord::ApplicationNotFound),
            (0x80, 0x10) => {
                self.pending = (0..INFO_LEN).map(|i| (i % 251) as u8).collect();
                self.next_part(le)
            }
            (0x00, 0xC0) if self.pending.is_empty() => sw(StatusWord::ConditionsNotSatisfied),
            (0x00, 0xC0) => self.next_part(le),
            (0x80, 0x54) => {
                self.chain.extend_from_slice(&apdu.data);
                if apdu.cla & 0x10 != 0 {
                    sw(StatusWord::Ok)
                } else {
                    let mut r = (self.chain.len() as u16).to_be_bytes().to_vec();
                    self.chain.clear();
                    r.extend(sw(StatusWord::Ok));
                    r
                }
            }
            (0x80, INS_ECHO) => {
                let mut r = apdu.data.clone();
                r.extend_from_slice(&self.counter.to_be_bytes());
                self.counter += 1;
                r.extend(sw(StatusWord::Ok));
                r
            }
            (0x80, INS_MUTE) => return Err(Mute),
            _ => sw(StatusWord::InsNotSupported),
        })
    }
}

fn echo(ch: &mut PcscChannel, data: &[u8]) -> Result<Vec<u8>, TransportError> {
    // Case 4 (Lc, data, Le), or case 2 (Le only) without data.
    let apdu = CommandApdu { cla: 0x80, ins: INS_ECHO, p1: 0, p2: 0, data: data.to_vec(), le: Some(256) };
    ch.transmit(&apdu.to_bytes())
}

/// Wait until pcscd sees the served card; a failure shows what the connector went through.
fn inserted(served: &ServedCard<TestCard>, reader: &str) -> PcscChannel {
    match PcscChannel::wait_and_connect(reader, WAIT) {
        Ok(ch) => ch,
        Err(e) => panic!("the served card did not appear in {reader}: {e}; connector events: {:?}", served.events()),
    }
}

fn present(name: &str) -> bool {
    list_readers()
        .unwrap()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
        .card_present
}

#[test]
fn served_card_appears_in_the_reader_and_leaves_when_stopped() {
    let pc = acquire();
    let (r0, r1) = (pc.reader(0).clone(), pc.reader(1).clone());
    assert!(!present(&r0.name));
    let served = ServedCard::start(TestCard::default(), &r0.addr());
    assert_eq!(inserted(&served, &r0.name).reader(), r0.name);
    assert!(present(&r0.name));
    assert!(!present(&r1.name), "the card must be in {} only", r0.name);

    let (card, result, events, took) = served.stop();
    result.unwrap();
    assert!(took < Duration::from_secs(1), "serve took {took:?} to see the stop flag");
    assert!(card.power_ons >= 1, "pcscd powers an inserted card up: {events:?}");
    assert!(events.last().is_some_and(|e| e == "Stopped"), "{events:?}");
    assert!(wait_for_card_removal(&r0.name, WAIT).unwrap(), "pcscd did not see the card leave");
    assert!(!present(&r0.name));
}

#[test]
fn exchange_through_pcscd_with_get_response_and_chaining() {
    let pc = acquire();
    let r0 = pc.reader(0).clone();
    let served = ServedCard::start(TestCard::default(), &r0.addr());
    // "00 00" designates the first reader by a unique substring.
    let mut ch = inserted(&served, "00 00");
    assert_eq!(ch.reader(), r0.name);
    assert_eq!(ch.name(), r0.name);
    assert_eq!(ch.atr().unwrap(), ATR);

    let mut trace = Trace::default();
    let r = exchange(&mut ch, &mut trace, &Command::Select { aid: AID.to_vec() }).unwrap();
    assert_eq!(r.sw, StatusWord::Ok);
    let r = exchange(&mut ch, &mut trace, &Command::Select { aid: vec![0xA0, 0, 0, 0, 1] }).unwrap();
    assert_eq!(r.sw, StatusWord::ApplicationNotFound);
    assert_eq!(trace.apdus, 2);

    // 600 bytes: 256 + 61 00, GET RESPONSE 256 + 61 58, GET RESPONSE 88 + 90 00.
    let r = exchange(&mut ch, &mut trace, &Command::GetCardInfo { certificate: true }).unwrap();
    assert_eq!(r.sw, StatusWord::Ok);
    assert_eq!(r.data, (0..INFO_LEN).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    assert_eq!(trace.apdus, 5);

    // 600 data bytes go as a chain of three commands (255 + 255 + 90).
    let store = Command::PersoStore { item: PersoItem::TrustAnchor, data: vec![0x5A; 600] };
    let r = exchange(&mut ch, &mut trace, &store).unwrap();
    assert_eq!((r.sw, r.data), (StatusWord::Ok, 600u16.to_be_bytes().to_vec()));
    assert_eq!(trace.apdus, 8);

    let r = exchange(&mut ch, &mut trace, &Command::GetFactoryData).unwrap();
    assert_eq!(r.sw, StatusWord::InsNotSupported);

    assert_eq!(echo(&mut ch, &[1, 2, 3]).unwrap(), [1, 2, 3, 0, 0, 0, 0, 0x90, 0x00]);
    assert_eq!(echo(&mut ch, &[]).unwrap(), [0, 0, 0, 1, 0x90, 0x00]);
    ch.disconnect().unwrap();
}

#[test]
fn opensc_tool_reaches_the_served_card() {
    let pc = acquire();
    let r0 = pc.reader(0).clone();
    let served = ServedCard::start(TestCard::default(), &r0.addr());
    drop(inserted(&served, &r0.name));

    let list = Process::new("opensc-tool").arg("-l").output().expect("opensc-tool (package opensc) is needed");
    let list = String::from_utf8_lossy(&list.stdout);
    // "Nr.  Card  Features  Name" rows: the number first, the reader name last.
    let index = list
        .lines()
        .find(|l| l.trim_end().ends_with(&r0.name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("opensc-tool does not list {}:\n{list}", r0.name));

    let out = Process::new("opensc-tool").args(["-r", index, "-s", "80:E0:00:00:02:AB:CD:00"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SW1=0x90, SW2=0x00"), "{text}");
    assert!(text.contains("AB CD 00 00 00 00"), "{text}");

    let out = Process::new("opensc-tool").args(["-r", index, "-s", "80:42:00:00"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SW1=0x6D, SW2=0x00"), "{text}");
}

#[test]
fn card_pulled_mid_session_is_reported() {
    let pc = acquire();
    let r0 = pc.reader(0).clone();
    let served = ServedCard::start(TestCard::default(), &r0.addr());
    let mut ch = inserted(&served, &r0.name);
    assert!(echo(&mut ch, b"x").is_ok());

    let (_, result, _, _) = served.stop();
    result.unwrap();
    match echo(&mut ch, b"y") {
        Err(TransportError::CardRemoved { reader } | TransportError::NoCard { reader }) => {
            assert_eq!(reader, r0.name)
        }
        other => panic!("expected CardRemoved or NoCard, got {other:?}"),
    }
    assert!(ch.wait_for_removal(WAIT).unwrap());
    match PcscChannel::connect(&r0.name) {
        Err(TransportError::NoCard { reader }) => assert_eq!(reader, r0.name),
        Err(other) => panic!("expected NoCard, got {other:?}"),
        Ok(_) => panic!("connected to a card that was pulled"),
    }
}

#[test]
fn mute_card_is_removed_then_reinserted_and_powered_up_again() {
    let pc = acquire();
    let r0 = pc.reader(0).clone();
    let served = ServedCard::start(TestCard::default(), &r0.addr());
    let mut ch = inserted(&served, &r0.name);
    assert_eq!(echo(&mut ch, b"").unwrap(), [0, 0, 0, 0, 0x90, 0x00]);

    match ch.transmit(&[0x80, INS_MUTE, 0x00, 0x00]) {
        Err(TransportError::CardRemoved { .. }) => {}
        other => panic!("a mute card must look removed, got {other:?}"),
    }
    assert!(ch.wait_for_removal(WAIT).unwrap(), "pcscd must see the mute card leave");
    wait_for_card(&r0.name, WAIT).unwrap();
    ch.reconnect().unwrap();
    // Powered up afresh: the session counter starts again.
    assert_eq!(echo(&mut ch, b"").unwrap(), [0, 0, 0, 0, 0x90, 0x00]);
    ch.disconnect().unwrap();

    let (card, result, events, _) = served.stop();
    result.unwrap();
    assert!(events.iter().any(|e| e == "Removed"), "{events:?}");
    assert!(card.power_ons >= 2, "{events:?}");
}

#[test]
fn reader_names_resolve_or_fail_with_the_candidates() {
    let pc = acquire();
    let (r0, r1) = (pc.reader(0).clone(), pc.reader(1).clone());
    // The two vpcd readers share everything but their last digits.
    let common = &r0.name[..r0.name.len() - 1];
    match PcscChannel::connect(&common.to_lowercase()) {
        Err(TransportError::AmbiguousReader { matches, .. }) => {
            assert!(matches.contains(&r0.name) && matches.contains(&r1.name), "{matches}")
        }
        Err(other) => panic!("expected AmbiguousReader, got {other:?}"),
        Ok(_) => panic!("an ambiguous name connected"),
    }
    match PcscChannel::connect("no such reader anywhere") {
        Err(TransportError::NoReader { available, .. }) => {
            assert!(available.contains(&r0.name), "{available}")
        }
        Err(other) => panic!("expected NoReader, got {other:?}"),
        Ok(_) => panic!("a missing reader connected"),
    }
    match PcscChannel::connect(&r1.name) {
        Err(TransportError::NoCard { reader }) => assert_eq!(reader, r1.name),
        Err(other) => panic!("expected NoCard, got {other:?}"),
        Ok(_) => panic!("connected to an empty reader"),
    }
    match wait_for_card(&r1.name, Some(Duration::from_millis(300))) {
        Err(TransportError::NoCard { reader }) => assert_eq!(reader, r1.name),
        other => panic!("expected NoCard after the timeout, got {other:?}"),
    }
    assert!(wait_for_card_removal(&r1.name, Some(Duration::ZERO)).unwrap(), "an empty reader has no card to remove");
}

#[test]
fn served_card_comes_back_after_pcscd_restarts() {
    let mut pc = acquire();
    if !pc.owned {
        // Restarting a pcscd the system runs for others is not a test's business.
        eprintln!("skipped: pcscd was not started by the test harness");
        return;
    }
    let r0 = pc.reader(0).clone();
    let served = ServedCard::start(TestCard::default(), &r0.addr());
    drop(inserted(&served, &r0.name));

    pc.stop_daemon();
    match list_readers() {
        Err(TransportError::Service(_)) => {}
        other => panic!("with pcscd stopped, expected a Service error, got {other:?}"),
    }
    pc.start_daemon();
    let mut ch = inserted(&served, &r0.name);
    assert_eq!(echo(&mut ch, b"ok").unwrap(), [b'o', b'k', 0, 0, 0, 0, 0x90, 0x00]);
    drop(ch);

    let (_, result, events, _) = served.stop();
    result.unwrap();
    let connects = events.iter().filter(|e| e.starts_with("Connected")).count();
    assert!(connects >= 2, "the card must have reconnected: {events:?}");
    assert!(events.iter().any(|e| e.starts_with("Disconnected")), "{events:?}");
}

#[test]
fn harness_reader_file_gives_the_debian_readers_and_ports() {
    let dir = std::env::temp_dir().join(format!("keyroll-pcscd-parse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vpcd"), pcscd::READER_CONF).unwrap();
    std::fs::write(
        dir.join("serial"),
        "# a commented example\nFRIENDLYNAME \"Serial\"\nDEVICENAME /dev/ttyS0\nLIBPATH /x/libccidtwin.so\n",
    )
    .unwrap();
    let readers = pcscd::vpcd_readers_in(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let debian = [
        pcscd::VirtualReader { name: "Virtual PCD 00 00".into(), port: 35963 },
        pcscd::VirtualReader { name: "Virtual PCD 00 01".into(), port: 35964 },
    ];
    assert_eq!(readers, debian);
    // The vsmartcard-vpcd package's own file, where installed, says the same.
    if std::path::Path::new("/etc/reader.conf.d/vpcd").exists() {
        assert_eq!(pcscd::vpcd_readers_in(std::path::Path::new("/etc/reader.conf.d")), debian);
    }
}
