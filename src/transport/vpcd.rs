//! Puts a [`SmartCard`] into a virtual reader of pcscd: the card is a TCP client of the vpcd driver
//! (vsmartcard's `libifdvpcd.so`), so every PC/SC application on the machine (keyroll's own PC/SC
//! transport, `opensc-tool`, `pcsc_scan`) sees it as a card in "Virtual PCD 00 00" or a sibling reader.
//!
//! # The vpcd protocol
//!
//! Every message in both directions is a 2-byte big-endian length followed by that many bytes; only
//! vpcd starts an exchange. A 1-byte payload is a control: `0x00` power off, `0x01` power on, `0x02`
//! reset (none of these three is answered) and `0x04` get ATR (answered with the ATR). A longer payload
//! is a command APDU, answered with the response APDU (data ‖ SW1 SW2). pcscd asks for the ATR every
//! 400 ms to see whether the card is still there, and a closed connection means "card removed".
//!
//! # Latency
//!
//! vpcd writes the length and the payload of a frame in two TCP writes. With default sockets, Nagle's
//! algorithm on one side and delayed ACKs on the other then cost ~48 ms per APDU (measured on this kind
//! of machine, DESIGN.md §5). So this connector sets `TCP_NODELAY` and re-arms `TCP_QUICKACK` before
//! every read (Linux clears it again after a while), and writes each reply frame in one write.
//!
//! # Life cycle
//!
//! [`serve`] connects, answers until the connection drops, and reconnects with backoff (pcscd may be
//! restarting), until the caller's stop flag is set. When the card is mute (`Err(Mute)`: its power was
//! cut mid-command) the connector closes the socket, which pcscd sees as a removed card, waits long
//! enough for pcscd's presence poll to notice, and connects again: the card is reinserted and pcscd
//! powers it on. A connection on which vpcd sends nothing for 3 s (pcscd polls every 400 ms) is
//! replaced by a new one. Nothing a peer sends can make this module panic: bad frames drop the
//! connection with a reason in a [`VpcdEvent::Disconnected`].
//!
//! # Trust
//!
//! The vpcd protocol has no authentication, and vpcd listens on every interface: whoever reaches the
//! port first is the card, and the card answers whoever holds the port. Serve to loopback addresses.

use crate::protocol::SmartCard;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;
use zeroize::Zeroize;

/// vpcd's port for its first reader, "Virtual PCD 00 00" (0x8C7B, Debian's `/etc/reader.conf.d/vpcd`);
/// the second reader of the same entry listens on the next port.
pub const DEFAULT_PORT: u16 = 35963;

/// Largest frame accepted from vpcd: the largest APDU the card accepts (4 KiB of data in an extended
/// case 4 APDU: 4-byte header, 3-byte Lc, 2-byte Le). The keyroll protocol itself uses short APDUs and
/// chains longer data; a length beyond this can only come from a confused or hostile peer, and the
/// connection is dropped.
pub const MAX_FRAME: usize = crate::protocol::apdu::MAX_COMMAND_DATA + 9;

/// How often a blocked read gives up to look at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Once a frame has started, the rest must follow within this time (vpcd sends the two parts of a
/// frame back to back); a peer that stalls mid-frame is dropped rather than waited for forever.
const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// pcscd asks a card it knows for its ATR every 400 ms. A connection on which nothing at all arrives
/// for this long is not being served: it waits in vpcd's accept backlog while vpcd believes an older
/// connection is still its card (seen after a reader reset failed on a card that had just left). A new
/// connection gets the card noticed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Timeout of one TCP connect; on loopback a refusal is immediate, this bounds a remote vpcd.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First and largest pause between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// After a mute card closed its connection, how long it stays "out of the reader". pcscd polls card
/// presence every 400 ms; staying out for more than two polls makes sure it records the removal and
/// powers the card up again on reinsertion, instead of taking the new connection for the old card.
const REINSERT_DELAY: Duration = Duration::from_millis(1000);

const CTRL_POWER_OFF: u8 = 0x00;
const CTRL_POWER_ON: u8 = 0x01;
const CTRL_RESET: u8 = 0x02;
const CTRL_GET_ATR: u8 = 0x04;

/// What went wrong with vpcd. [`serve`] returns only the address errors; the others end one
/// connection, are reported in [`VpcdEvent::Disconnected`], and are followed by a reconnection.
#[derive(Debug, Error)]
pub enum VpcdError {
    #[error("cannot resolve vpcd address {addr:?}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("vpcd address {addr:?} resolves to no socket address")]
    NoAddress { addr: String },
    #[error("cannot connect to vpcd at {addr}: {source} (is pcscd running with a vpcd reader on that port?)")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("cannot set {option} on the vpcd connection: {source}")]
    SocketOption { option: &'static str, source: io::Error },
    #[error("vpcd closed the connection")]
    Closed,
    #[error("vpcd frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized { len: usize, max: usize },
    #[error("vpcd sent an empty frame")]
    EmptyFrame,
    #[error("vpcd frame cut short: {got} of {expected} bytes arrived")]
    Truncated { got: usize, expected: usize },
    #[error("the card's answer of {len} bytes does not fit a vpcd frame")]
    ReplyTooLong { len: usize },
    #[error("vpcd sent nothing for {} s (not even its presence poll)", .idle.as_secs())]
    Silent { idle: Duration },
    #[error("I/O error on the vpcd connection: {source}")]
    Io { source: io::Error },
}

/// What the connector did, for logs and tests. Carries APDU headers, lengths, status words and times,
/// never data bytes: responses can hold wrapped keys and certificates (house rule 8).
#[derive(Debug)]
pub enum VpcdEvent {
    /// A connection to vpcd is up: the card is in the reader.
    Connected {
        addr: SocketAddr,
    },
    /// A connection attempt failed; the next one follows after `retry_in`.
    ConnectFailed {
        error: VpcdError,
        retry_in: Duration,
    },
    PowerOn,
    PowerOff,
    Reset,
    /// One command APDU was answered.
    Apdu {
        /// CLA INS P1 P2 (fewer bytes if the command was shorter).
        header: Vec<u8>,
        command_len: usize,
        response_len: usize,
        /// SW1 SW2 of the response, if it had two bytes.
        sw: Option<u16>,
        elapsed: Duration,
    },
    /// vpcd sent a 1-byte control this connector does not know; it was ignored.
    UnknownControl {
        control: u8,
    },
    /// The card was mute (its power cut mid-command): the connection was closed, the card "removed".
    Removed,
    /// A connection ended for the stated reason; a reconnection follows unless stop is set.
    Disconnected {
        error: VpcdError,
    },
    /// The stop flag was seen: the card left the reader and [`serve`] returns.
    Stopped,
}

/// Serve `card` to the vpcd driver listening at `addr` (e.g. `127.0.0.1:35963`) until `stop` is set.
///
/// Reconnects with backoff whenever the connection cannot be made or drops (pcscd not yet started, or
/// restarted). The stop flag is looked at between frames at least every 100 ms and during backoff; a
/// command in flight is answered first. When the connection ends for any reason the card is powered
/// off, as a card pulled from a reader is. The card persists itself inside `process`, so nothing else
/// needs saving between commands.
///
/// Errors: only an address that does not resolve. Everything else is reported through `on_event`.
pub fn serve(
    card: &mut dyn SmartCard,
    addr: &str,
    stop: &AtomicBool,
    mut on_event: impl FnMut(VpcdEvent),
) -> Result<(), VpcdError> {
    let addrs: Vec<SocketAddr> =
        addr.to_socket_addrs().map_err(|source| VpcdError::Resolve { addr: addr.to_string(), source })?.collect();
    if addrs.is_empty() {
        return Err(VpcdError::NoAddress { addr: addr.to_string() });
    }
    let mut backoff = BACKOFF_MIN;
    while !stop.load(Ordering::SeqCst) {
        let stream = match connect(&addrs) {
            Ok(stream) => stream,
            Err(error) => {
                on_event(VpcdEvent::ConnectFailed { error, retry_in: backoff });
                pause(backoff, stop);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let peer = stream.peer_addr().unwrap_or(addrs[0]);
        on_event(VpcdEvent::Connected { addr: peer });
        let mut session = Session { stream, card: &mut *card, powered: false, frames: 0 };
        let end = session.run(stop, &mut on_event);
        let (powered, frames) = (session.powered, session.frames);
        // Closing the socket is what tells vpcd the card left the reader.
        let _ = session.stream.shutdown(Shutdown::Both);
        drop(session);
        if powered {
            card.power_off();
        }
        match end {
            End::Stopped => break,
            End::Mute => {
                on_event(VpcdEvent::Removed);
                pause(REINSERT_DELAY, stop);
            }
            End::Error(error) => {
                // A peer that accepts and hangs up without a frame (not vpcd, or a vpcd shutting
                // down) must not make this a busy loop: back off as for a refused connection.
                backoff = if frames > 0 { BACKOFF_MIN } else { (backoff * 2).min(BACKOFF_MAX) };
                on_event(VpcdEvent::Disconnected { error });
                pause(backoff, stop);
            }
        }
    }
    on_event(VpcdEvent::Stopped);
    Ok(())
}

/// Sleep for `total`, in slices, returning early once `stop` is set.
fn pause(total: Duration, stop: &AtomicBool) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, VpcdError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(|source| VpcdError::SocketOption { option: "TCP_NODELAY", source })?;
                stream
                    .set_read_timeout(Some(POLL_INTERVAL))
                    .map_err(|source| VpcdError::SocketOption { option: "SO_RCVTIMEO", source })?;
                quickack(&stream)?;
                return Ok(stream);
            }
            Err(source) => last = Some(VpcdError::Connect { addr: *addr, source }),
        }
    }
    // `addrs` is never empty (checked by `serve`), so `last` is set; the fallback only avoids a panic.
    Err(last.unwrap_or(VpcdError::Closed))
}

/// Ask the kernel to acknowledge received data at once instead of delaying the ACK. Linux turns
/// quick-ACK mode off again by itself, so this is repeated before every read (see the module docs).
#[cfg(target_os = "linux")]
fn quickack(stream: &TcpStream) -> Result<(), VpcdError> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor owned by `stream`, and a pointer to a live c_int with its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(VpcdError::SocketOption { option: "TCP_QUICKACK", source: io::Error::last_os_error() })
    }
}

/// Other systems have no TCP_QUICKACK; TCP_NODELAY alone still avoids the worst of the delay.
#[cfg(not(target_os = "linux"))]
fn quickack(_stream: &TcpStream) -> Result<(), VpcdError> {
    Ok(())
}

/// How one connection ended.
enum End {
    Stopped,
    Mute,
    Error(VpcdError),
}

/// One connection to vpcd: the card is in the reader for as long as it lasts.
struct Session<'c> {
    stream: TcpStream,
    card: &'c mut dyn SmartCard,
    powered: bool,
    /// Frames received on this connection.
    frames: usize,
}

impl Session<'_> {
    fn run(&mut self, stop: &AtomicBool, on_event: &mut impl FnMut(VpcdEvent)) -> End {
        loop {
            let mut frame = match self.read_frame(stop) {
                Ok(Some(frame)) => {
                    self.frames += 1;
                    frame
                }
                Ok(None) => return End::Stopped,
                Err(e) => return End::Error(e),
            };
            let end = self.answer(&frame, on_event);
            // Commands can carry keys (personalisation): do not leave them in freed memory.
            frame.zeroize();
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Answer one frame; `Some` when the connection must end.
    fn answer(&mut self, frame: &[u8], on_event: &mut impl FnMut(VpcdEvent)) -> Option<End> {
        match frame {
            [] => return Some(End::Error(VpcdError::EmptyFrame)),
            [CTRL_POWER_OFF] => {
                self.card.power_off();
                self.powered = false;
                on_event(VpcdEvent::PowerOff);
            }
            [CTRL_POWER_ON] => {
                self.card.power_on();
                self.powered = true;
                on_event(VpcdEvent::PowerOn);
            }
            [CTRL_RESET] => {
                self.card.reset();
                on_event(VpcdEvent::Reset);
            }
            [CTRL_GET_ATR] => {
                // The presence poll (every 400 ms): answered at once, not reported.
                let atr = self.card.atr();
                if let Err(e) = self.write_frame(&atr) {
                    return Some(End::Error(e));
                }
            }
            [control] => on_event(VpcdEvent::UnknownControl { control: *control }),
            apdu => {
                let started = Instant::now();
                let mut response = match self.card.process(apdu) {
                    Ok(response) => response,
                    Err(crate::protocol::Mute) => return Some(End::Mute),
                };
                if response.len() > usize::from(u16::MAX) {
                    // Cannot be framed; 6F00 (ISO/IEC 7816-4: no precise diagnosis) keeps the
                    // reader's session alive instead of pulling the card.
                    response.zeroize();
                    response = vec![0x6F, 0x00];
                }
                let sw = match response.as_slice() {
                    [.., sw1, sw2] => Some(u16::from_be_bytes([*sw1, *sw2])),
                    _ => None,
                };
                let response_len = response.len();
                let written = self.write_frame(&response);
                // Zeroize clears the vector too.
                response.zeroize();
                if let Err(e) = written {
                    return Some(End::Error(e));
                }
                on_event(VpcdEvent::Apdu {
                    header: apdu[..apdu.len().min(4)].to_vec(),
                    command_len: apdu.len(),
                    response_len,
                    sw,
                    elapsed: started.elapsed(),
                });
            }
        }
        None
    }

    /// Read one frame. `Ok(None)`: `stop` was set while no frame was under way.
    fn read_frame(&mut self, stop: &AtomicBool) -> Result<Option<Vec<u8>>, VpcdError> {
        let mut header = [0u8; 2];
        let mut got = 0;
        let waiting = Instant::now();
        // Wait for the first byte, looking at the stop flag between read timeouts.
        while got == 0 {
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            if waiting.elapsed() >= IDLE_TIMEOUT {
                return Err(VpcdError::Silent { idle: IDLE_TIMEOUT });
            }
            got = match self.read_some(&mut header)? {
                Some(0) => return Err(VpcdError::Closed),
                Some(n) => n,
                None => 0,
            };
        }
        let deadline = Instant::now() + FRAME_DEADLINE;
        self.read_rest(&mut header, got, deadline)?;
        let len = u16::from_be_bytes(header) as usize;
        if len > MAX_FRAME {
            return Err(VpcdError::Oversized { len, max: MAX_FRAME });
        }
        let mut payload = vec![0u8; len];
        self.read_rest(&mut payload, 0, deadline)?;
        Ok(Some(payload))
    }

    /// Fill `buf[got..]` before `deadline`.
    fn read_rest(&mut self, buf: &mut [u8], mut got: usize, deadline: Instant) -> Result<(), VpcdError> {
        while got < buf.len() {
            if Instant::now() >= deadline {
                return Err(VpcdError::Truncated { got, expected: buf.len() });
            }
            match self.read_some(&mut buf[got..])? {
                Some(0) => {
                    return Err(VpcdError::Truncated { got, expected: buf.len() });
                }
                Some(n) => got += n,
                None => {}
            }
        }
        Ok(())
    }

    /// One read; `None` when the read timeout passed with nothing to read.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>, VpcdError> {
        quickack(&self.stream)?;
        match self.stream.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(source) => Err(VpcdError::Io { source }),
        }
    }

    /// Write one frame in a single write, so the peer receives length and payload together.
    fn write_frame(&mut self, payload: &[u8]) -> Result<(), VpcdError> {
        let len = u16::try_from(payload.len()).map_err(|_| VpcdError::ReplyTooLong { len: payload.len() })?;
        let mut frame = Vec::with_capacity(2 + payload.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(payload);
        let written = self.stream.write_all(&frame).map_err(|source| VpcdError::Io { source });
        // The frame can hold response data (wrapped keys): do not leave it in freed memory.
        frame.zeroize();
        written
    }
}

#[cfg(test)]
mod tests {
    //! The connector against a fake vpcd (a loopback listener speaking the same framing), so the
    //! protocol, the error paths and the life cycle are tested without pcscd.

    use super::*;
    use crate::protocol::Mute;
    use std::net::TcpListener;

    /// A T=1 ATR: TS 3B, T0 80, TD1 80, TD2 01 (T=1), TCK 01.
    const ATR: [u8; 5] = [0x3B, 0x80, 0x80, 0x01, 0x01];

    /// Records what the connector asked of it; INS EE makes it mute (a tear).
    #[derive(Default)]
    struct LogCard {
        log: Vec<&'static str>,
        delay: Duration,
    }

    impl SmartCard for LogCard {
        fn atr(&self) -> Vec<u8> {
            ATR.to_vec()
        }
        fn power_on(&mut self) {
            self.log.push("power_on");
        }
        fn power_off(&mut self) {
            self.log.push("power_off");
        }
        fn reset(&mut self) {
            self.log.push("reset");
        }
        fn process(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Mute> {
            self.log.push("process");
            std::thread::sleep(self.delay);
            if apdu.get(1) == Some(&0xEE) {
                return Err(Mute);
            }
            // Echo the command data (after a 5-byte header) and 9000.
            let mut r = apdu.get(5..).unwrap_or_default().to_vec();
            r.extend_from_slice(&[0x90, 0x00]);
            Ok(r)
        }
    }

    fn listener() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        (l, addr)
    }

    fn accept(l: &TcpListener) -> TcpStream {
        l.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    return s;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("the connector did not connect: {e}"),
            }
        }
    }

    fn send(s: &mut TcpStream, payload: &[u8]) {
        // Two writes, as vpcd does.
        s.write_all(&(payload.len() as u16).to_be_bytes()).unwrap();
        s.write_all(payload).unwrap();
    }

    fn recv(s: &mut TcpStream) -> Vec<u8> {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        let mut p = vec![0u8; u16::from_be_bytes(h) as usize];
        s.read_exact(&mut p).unwrap();
        p
    }

    /// The peer closed: a read returns 0 bytes.
    fn assert_closed(s: &mut TcpStream) {
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => {}
            Ok(_) => panic!("unexpected data from the connector"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected the connector to close the connection: {e}"),
        }
    }

    /// Run `serve` on a scoped thread while `script` plays vpcd; returns serve's result and events.
    fn run(
        card: &mut LogCard,
        addr: &str,
        script: impl FnOnce(&AtomicBool),
    ) -> (Result<(), VpcdError>, Vec<VpcdEvent>) {
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let server = scope.spawn(|| {
                let mut events = Vec::new();
                let r = serve(card, addr, &stop, |e| events.push(e));
                (r, events)
            });
            script(&stop);
            stop.store(true, Ordering::SeqCst);
            server.join().unwrap()
        })
    }

    #[test]
    fn answers_controls_and_apdus() {
        let (l, addr) = listener();
        let mut card = LogCard::default();
        let (r, events) = run(&mut card, &addr, |_| {
            let mut s = accept(&l);
            send(&mut s, &[CTRL_POWER_ON]);
            send(&mut s, &[CTRL_GET_ATR]);
            assert_eq!(recv(&mut s), ATR);
            send(&mut s, &[0x00, 0xA4, 0x04, 0x00, 0x02, 0xAB, 0xCD]);
            assert_eq!(recv(&mut s), [0xAB, 0xCD, 0x90, 0x00]);
            send(&mut s, &[CTRL_RESET]);
            send(&mut s, &[0x09]);
            send(&mut s, &[CTRL_POWER_OFF]);
            // An answered request proves the unanswered controls before it were handled.
            send(&mut s, &[CTRL_GET_ATR]);
            assert_eq!(recv(&mut s), ATR);
        });
        r.unwrap();
        assert_eq!(card.log, ["power_on", "process", "reset", "power_off"]);
        assert!(matches!(events.first(), Some(VpcdEvent::Connected { .. })), "{events:?}");
        assert!(events.iter().any(|e| matches!(
            e,
            VpcdEvent::Apdu { header, command_len: 7, response_len: 4, sw: Some(0x9000), .. }
                if header == &[0x00, 0xA4, 0x04, 0x00]
        )));
        assert!(events.iter().any(|e| matches!(e, VpcdEvent::UnknownControl { control: 0x09 })));
        assert!(matches!(events.last(), Some(VpcdEvent::Stopped)), "{events:?}");
    }

    #[test]
    fn oversized_frame_drops_the_connection_and_reconnects() {
        let (l, addr) = listener();
        let mut card = LogCard::default();
        let (r, events) = run(&mut card, &addr, |_| {
            let mut s = accept(&l);
            s.write_all(&((MAX_FRAME + 1) as u16).to_be_bytes()).unwrap();
            assert_closed(&mut s);
            // The card comes back on a new connection and still works.
            let mut s = accept(&l);
            send(&mut s, &[CTRL_GET_ATR]);
            assert_eq!(recv(&mut s), ATR);
        });
        r.unwrap();
        assert!(events.iter().any(|e| matches!(
            e,
            VpcdEvent::Disconnected { error: VpcdError::Oversized { len, max: MAX_FRAME } } if *len == MAX_FRAME + 1
        )));
        assert_eq!(events.iter().filter(|e| matches!(e, VpcdEvent::Connected { .. })).count(), 2);
        assert!(card.log.is_empty(), "{:?}", card.log);
    }

    #[test]
    fn truncated_and_empty_frames_drop_the_connection() {
        let (l, addr) = listener();
        let mut card = LogCard::default();
        let (r, events) = run(&mut card, &addr, |_| {
            let mut s = accept(&l);
            s.write_all(&[0x00, 0x0A, 1, 2, 3]).unwrap();
            drop(s);
            let mut s = accept(&l);
            send(&mut s, &[]);
            assert_closed(&mut s);
            let _third = accept(&l);
        });
        r.unwrap();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, VpcdEvent::Disconnected { error: VpcdError::Truncated { got: 3, expected: 10 } }))
        );
        assert!(events.iter().any(|e| matches!(e, VpcdEvent::Disconnected { error: VpcdError::EmptyFrame })));
    }

    #[test]
    fn mute_card_is_removed_then_reinserted() {
        let (l, addr) = listener();
        let mut card = LogCard::default();
        let (r, events) = run(&mut card, &addr, |_| {
            let mut s = accept(&l);
            send(&mut s, &[CTRL_POWER_ON]);
            send(&mut s, &[0x80, 0xEE, 0x00, 0x00]);
            assert_closed(&mut s);
            let removed = Instant::now();
            let mut s = accept(&l);
            // Out of the reader long enough for pcscd's 400 ms presence poll to notice.
            assert!(removed.elapsed() >= Duration::from_millis(800), "{:?}", removed.elapsed());
            send(&mut s, &[CTRL_POWER_ON]);
            send(&mut s, &[0x00, 0xB0, 0x00, 0x00]);
            assert_eq!(recv(&mut s), [0x90, 0x00]);
        });
        r.unwrap();
        // The torn card lost its power; vpcd powers it up again after reinsertion.
        assert_eq!(card.log, ["power_on", "process", "power_off", "power_on", "process", "power_off"]);
        assert!(events.iter().any(|e| matches!(e, VpcdEvent::Removed)));
    }

    #[test]
    fn stop_flag_ends_serve_promptly_and_removes_the_card() {
        let (l, addr) = listener();
        let mut card = LogCard::default();
        let mut conn = None;
        let started = std::cell::Cell::new(None);
        let (r, _) = run(&mut card, &addr, |_| {
            let mut s = accept(&l);
            send(&mut s, &[CTRL_POWER_ON]);
            send(&mut s, &[CTRL_GET_ATR]);
            recv(&mut s);
            conn = Some(s);
            started.set(Some(Instant::now()));
        });
        r.unwrap();
        let took = started.get().unwrap().elapsed();
        assert!(took < Duration::from_millis(600), "serve took {took:?} to see the stop flag");
        assert_closed(conn.as_mut().unwrap());
        assert_eq!(card.log, ["power_on", "power_off"]);
    }

    #[test]
    fn command_in_flight_is_answered_before_stopping() {
        let (l, addr) = listener();
        let mut card = LogCard { delay: Duration::from_millis(300), ..LogCard::default() };
        let (r, events) = run(&mut card, &addr, |stop| {
            let mut s = accept(&l);
            send(&mut s, &[CTRL_POWER_ON]);
            send(&mut s, &[0x00, 0xB0, 0x00, 0x00, 0x01, 0x42]);
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, Ordering::SeqCst);
            assert_eq!(recv(&mut s), [0x42, 0x90, 0x00]);
        });
        r.unwrap();
        assert!(events.iter().any(|e| matches!(e, VpcdEvent::Apdu { sw: Some(0x9000), .. })));
    }

    #[test]
    fn no_listener_means_retries_until_stopped() {
        let (l, addr) = listener();
        drop(l);
        let mut card = LogCard::default();
        let (r, events) = run(&mut card, &addr, |_| std::thread::sleep(Duration::from_millis(300)));
        r.unwrap();
        let retries: Vec<Duration> = events
            .iter()
            .filter_map(|e| match e {
                VpcdEvent::ConnectFailed { error: VpcdError::Connect { .. }, retry_in } => Some(*retry_in),
                _ => None,
            })
            .collect();
        assert!(retries.len() >= 2, "{events:?}");
        assert!(retries.windows(2).all(|w| w[1] >= w[0]), "backoff must not shrink: {retries:?}");
    }

    #[test]
    fn silent_vpcd_gets_a_new_connection() {
        let (l, addr) = listener();
        let mut card = LogCard::default();
        let (r, events) = run(&mut card, &addr, |_| {
            let _ignored = accept(&l);
            let waited = Instant::now();
            let mut s = accept(&l);
            assert!(waited.elapsed() >= IDLE_TIMEOUT - Duration::from_millis(200));
            send(&mut s, &[CTRL_GET_ATR]);
            assert_eq!(recv(&mut s), ATR);
        });
        r.unwrap();
        assert!(events.iter().any(|e| matches!(e, VpcdEvent::Disconnected { error: VpcdError::Silent { .. } })));
    }

    #[test]
    fn unresolvable_address_is_an_error() {
        let mut card = LogCard::default();
        let stop = AtomicBool::new(false);
        let r = serve(&mut card, "no port here", &stop, |_| {});
        assert!(matches!(r, Err(VpcdError::Resolve { .. })), "{r:?}");
    }
}
