//! Test harness for PC/SC: a pcscd with vpcd virtual readers, shared safely by tests.
//!
//! Include it with `#[path = "support/pcscd.rs"] mod pcscd;` in a test built with `--features pcsc`,
//! then start each test with `let pcscd = pcscd::acquire();`. The guard:
//!
//! * **serialises** every test that uses pcscd: a process-wide mutex for the threads of one test
//!   binary and an exclusive `flock` on `/tmp/keyroll-pcscd/lock` for separate binaries (and other
//!   worktrees on the same machine), because there is one pcscd per machine and its readers are shared;
//! * **finds or starts pcscd**. pcscd has one socket per machine, `/run/pcscd/pcscd.comm`. If a pcscd
//!   answers there and lists vpcd readers, it is reused, whoever started it. Otherwise the harness starts
//!   `pcscd --foreground --config /tmp/keyroll-pcscd/reader.conf.d` (never `--auto-exit`, which
//!   would end it between tests), in its own session with its log in `/tmp/keyroll-pcscd/pcscd.log`.
//!   A socket or pid file that no live pcscd answers (a killed daemon) is removed first. The daemon is
//!   left running when the tests end, so the next run reuses it;
//! * waits until pcscd lists the readers and no card is in them (a previous test's card is gone).
//!
//! # Readers
//!
//! The harness's reader file is Debian's `/etc/reader.conf.d/vpcd` (vsmartcard-vpcd), so a pcscd
//! started by the system and one started here offer the same two readers:
//!
//! | reader name           | vpcd port (the card connects to `127.0.0.1:PORT`) |
//! | --------------------- | ------------------------------------------------- |
//! | `Virtual PCD 00 00`   | 35963                                             |
//! | `Virtual PCD 00 01`   | 35964                                             |
//!
//! For a pcscd that is reused, names and ports are read from the reader files of the configuration
//! directory on its command line (`/etc/reader.conf.d` by default).

#![allow(dead_code)]

use keyroll::protocol::SmartCard;
use keyroll::transport::pcsc::list_readers;
use keyroll::transport::vpcd::{self, VpcdEvent};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// pcscd's socket and pid file (pcsc-lite's compiled-in paths on Debian).
pub const SOCKET: &str = "/run/pcscd/pcscd.comm";
pub const PID_FILE: &str = "/run/pcscd/pcscd.pid";
/// Where pcscd reads reader files when started without `--config`.
const SYSTEM_CONF_DIR: &str = "/etc/reader.conf.d";
const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";

/// The reader file the harness gives a pcscd it starts: Debian's, two readers on 35963 and 35964.
pub const READER_CONF: &str = "FRIENDLYNAME \"Virtual PCD\"
DEVICENAME   /dev/null:0x8C7B
LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so
CHANNELID    0x8C7B
";

/// How long pcscd gets to start and list its readers; it takes well under a second here.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// More than one of pcscd's 400 ms presence polls.
const POLL_SETTLE: Duration = Duration::from_millis(600);
/// pcscd polls card presence every 400 ms; a card that left is noticed within this.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A vpcd reader: its PC/SC name and the TCP port its card connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualReader {
    pub name: String,
    pub port: u16,
}

impl VirtualReader {
    /// The loopback address a card serves to.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Exclusive use of pcscd and its vpcd readers for one test. Dropping it lets the next test in.
pub struct Pcscd {
    pub readers: Vec<VirtualReader>,
    /// The harness started this pcscd (now or in an earlier run), so a test may stop and restart it.
    pub owned: bool,
    _file_lock: File,
    _thread_lock: MutexGuard<'static, ()>,
}

static THREAD_LOCK: Mutex<()> = Mutex::new(());
/// The pcscd this process started, kept so that it can be reaped after a restart (no zombie).
static CHILD: Mutex<Option<Child>> = Mutex::new(None);

/// The harness's directory: reader files, log and lock file. Fixed rather than under `$TMPDIR`:
/// pcscd is one per machine, so every run on the machine must take the same lock.
pub fn harness_dir() -> PathBuf {
    PathBuf::from("/tmp/keyroll-pcscd")
}

fn conf_dir() -> PathBuf {
    harness_dir().join("reader.conf.d")
}

/// Wait for exclusive use of pcscd, starting it if needed. Panics with the reason (and what to
/// install or stop) when PC/SC cannot be made usable: a test cannot run without it.
pub fn acquire() -> Pcscd {
    // A test that panicked while holding the lock poisons it; the state it guards is outside
    // the process (pcscd), so the next test can go on.
    let thread_lock = THREAD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = harness_dir();
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let file_lock = lock_file(&dir.join("lock"));
    let (readers, owned) = ensure_running();
    let pcscd = Pcscd { readers, owned, _file_lock: file_lock, _thread_lock: thread_lock };
    // Let pcscd's presence poll (every 400 ms) run once with no new card waiting, so it records the
    // previous test's card as gone even if a failed reset already made the reader look empty to
    // clients; a card connecting inside that window would be taken for the old one and stay hidden.
    std::thread::sleep(POLL_SETTLE);
    pcscd.wait_until_empty();
    pcscd
}

impl Pcscd {
    /// The `i`-th vpcd reader (0: "Virtual PCD 00 00" with the harness's reader file).
    pub fn reader(&self, i: usize) -> &VirtualReader {
        self.readers.get(i).unwrap_or_else(|| panic!("pcscd offers only {} vpcd readers", self.readers.len()))
    }

    /// Stop pcscd (only one the harness started) and wait until it is gone.
    pub fn stop_daemon(&self) {
        assert!(self.owned, "refusing to stop a pcscd the harness did not start");
        let pid = read_pid().expect("pcscd's pid file is missing");
        // SAFETY: plain kill(2) on a pid read from pcscd's own pid file.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let until = Instant::now() + START_TIMEOUT;
        while process_alive(pid) {
            assert!(Instant::now() < until, "pcscd (pid {pid}) did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_file(SOCKET);
        let _ = fs::remove_file(PID_FILE);
    }

    /// Start pcscd again with the harness's reader file and wait for its readers.
    pub fn start_daemon(&mut self) {
        self.readers = start();
        self.owned = true;
    }

    /// Wait until pcscd sees no card in any of the harness's readers.
    pub fn wait_until_empty(&self) {
        let until = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let busy: Vec<String> = match list_readers() {
                Ok(list) => list
                    .into_iter()
                    .filter(|r| r.card_present && self.readers.iter().any(|v| v.name == r.name))
                    .map(|r| r.name)
                    .collect(),
                Err(e) => vec![e.to_string()],
            };
            if busy.is_empty() {
                return;
            }
            assert!(Instant::now() < until, "vpcd readers still hold a card (another program serving?): {busy:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An exclusive `flock` that lasts as long as the returned file is open (released if the process dies).
fn lock_file(path: &Path) -> File {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open lock file {}: {e}", path.display()));
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock(2) on a descriptor owned by `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return file;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            panic!("cannot lock {}: {err}", path.display());
        }
    }
}

/// A running pcscd with vpcd readers: reuse it; none: start one. Returns its vpcd readers and
/// whether the harness started it.
fn ensure_running() -> (Vec<VirtualReader>, bool) {
    if UnixStream::connect(SOCKET).is_ok() {
        let pid = read_pid();
        let conf = pid.map(config_dir_of).unwrap_or_else(|| PathBuf::from(SYSTEM_CONF_DIR));
        let owned = conf == conf_dir();
        let expected = vpcd_readers_in(&conf);
        match wait_for_readers(&expected) {
            Ok(readers) => return (readers, owned),
            Err(listed) => panic!(
                "a pcscd (pid {pid:?}, config {}) is running but lists no vpcd reader ({listed}); the tests \
                 need its readers {expected:?}. Stop it (kill {}) so the harness can start its own, or \
                 install vsmartcard-vpcd and restart it",
                conf.display(),
                pid.map(|p| p.to_string()).unwrap_or_else(|| "PID".into())
            ),
        }
    }
    (start(), true)
}

/// Start `pcscd -f -c DIR` and wait for its readers.
fn start() -> Vec<VirtualReader> {
    assert!(
        Path::new(VPCD_DRIVER).exists(),
        "{VPCD_DRIVER} is missing: install pcscd and vsmartcard-vpcd (scripts/test does)"
    );
    // Nothing answers on the socket: whatever files remain belong to a dead daemon, and pcscd
    // refuses to start while its pid file names a live process (a reused pid would block it).
    if fs::symlink_metadata(SOCKET).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = fs::remove_file(SOCKET);
    }
    let _ = fs::remove_file(PID_FILE);
    let conf = conf_dir();
    fs::create_dir_all(&conf).unwrap_or_else(|e| panic!("cannot create {}: {e}", conf.display()));
    fs::write(conf.join("vpcd"), READER_CONF).unwrap_or_else(|e| panic!("cannot write the reader file: {e}"));
    let log_path = harness_dir().join("pcscd.log");
    let log = File::create(&log_path).unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
    let log2 = log.try_clone().unwrap_or_else(|e| panic!("cannot share the log file: {e}"));
    let mut cmd = Command::new("pcscd");
    cmd.arg("--foreground").arg("--config").arg(&conf);
    // Its own session and no inherited pipes: the daemon outlives the test run without holding
    // cargo's (or CI's) output open, and a Ctrl-C in the terminal does not reach it.
    cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start pcscd: {e}; install pcscd and vsmartcard-vpcd (scripts/test does)"));
    eprintln!("pcscd harness: started pcscd (pid {}) with {}", child.id(), conf.display());
    // Keep the child to reap it after a restart; an earlier one (stopped since) is reaped now.
    let mut slot = CHILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(mut old) = slot.replace(child) {
        let _ = old.try_wait();
    }
    drop(slot);
    let expected = vpcd_readers_in(&conf);
    let until = Instant::now() + START_TIMEOUT;
    while UnixStream::connect(SOCKET).is_err() {
        if let Some(status) =
            CHILD.lock().unwrap_or_else(|e| e.into_inner()).as_mut().and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("pcscd exited with {status}; see {}", log_path.display());
        }
        assert!(Instant::now() < until, "pcscd did not open {SOCKET}; see {}", log_path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_for_readers(&expected).unwrap_or_else(|listed| {
        panic!("pcscd started but lists {listed}, not {expected:?}; see {}", log_path.display())
    })
}

/// Wait until pcscd lists the expected readers; returns those it lists, or what it listed instead.
fn wait_for_readers(expected: &[VirtualReader]) -> Result<Vec<VirtualReader>, String> {
    let until = Instant::now() + START_TIMEOUT;
    loop {
        let listed = list_readers();
        if let Ok(list) = &listed {
            let found: Vec<VirtualReader> =
                expected.iter().filter(|v| list.iter().any(|r| r.name == v.name)).cloned().collect();
            if !found.is_empty() && (found.len() == expected.len() || Instant::now() >= until) {
                return Ok(found);
            }
        }
        if Instant::now() >= until {
            return Err(match listed {
                Ok(list) => format!("readers {:?}", list.into_iter().map(|r| r.name).collect::<Vec<_>>()),
                Err(e) => e.to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_pid() -> Option<i32> {
    // pcscd writes the number followed by a NUL byte.
    let text = fs::read_to_string(PID_FILE).ok()?;
    text.trim_matches(|c: char| c == '\0' || c.is_whitespace()).parse().ok()
}

/// Alive and not a zombie (a zombie has closed its sockets; its parent may never reap it).
fn process_alive(pid: i32) -> bool {
    if let Some(child) = CHILD.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        if child.id() as i32 == pid {
            return matches!(child.try_wait(), Ok(None));
        }
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The reader directory on a running pcscd's command line (`-c DIR`, `--config DIR`, `--config=DIR`).
fn config_dir_of(pid: i32) -> PathBuf {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-c" || a == "--config" {
            if let Some(dir) = it.next() {
                return PathBuf::from(dir);
            }
        } else if let Some(dir) = a.strip_prefix("--config=") {
            return PathBuf::from(dir);
        }
    }
    PathBuf::from(SYSTEM_CONF_DIR)
}

/// The vpcd readers that reader files in `conf` (a directory, or one file) declare. Each vpcd entry
/// gives two readers, "NAME 0i 00" on port P and "NAME 0i 01" on P+1, where i counts earlier entries of
/// the same name and P is the number after the last ':' of DEVICENAME (else CHANNELID).
pub fn vpcd_readers_in(conf: &Path) -> Vec<VirtualReader> {
    let mut files: Vec<PathBuf> = match fs::read_dir(conf) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => vec![conf.to_path_buf()],
    };
    files.sort();
    let mut readers = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for entry in parse_reader_file(&text) {
            let index = seen.iter().filter(|n| **n == entry.0).count();
            seen.push(entry.0.clone());
            for slot in 0..2u16 {
                readers.push(VirtualReader {
                    name: format!("{} {:02X} {:02X}", entry.0, index, slot),
                    port: entry.1 + slot,
                });
            }
        }
    }
    readers
}

/// (friendly name, port) of each vpcd entry of a reader file.
fn parse_reader_file(text: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    let (mut name, mut device, mut lib, mut channel) = (None, None, None, None);
    let mut flush = |name: &mut Option<String>,
                     device: &mut Option<String>,
                     lib: &mut Option<String>,
                     channel: &mut Option<String>| {
        if let (Some(n), Some(l)) = (name.take(), lib.take()) {
            let port = device
                .take()
                .and_then(|d| d.rsplit_once(':').map(|(_, p)| p.to_string()))
                .or(channel.take())
                .and_then(|p| parse_number(&p));
            if l.contains("ifdvpcd") {
                if let Some(port) = port {
                    out.push((n, port));
                }
            }
        }
        *device = None;
        *channel = None;
    };
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim().trim_matches('"').to_string();
        match key {
            "FRIENDLYNAME" => {
                flush(&mut name, &mut device, &mut lib, &mut channel);
                name = Some(value);
            }
            "DEVICENAME" => device = Some(value),
            "LIBPATH" => lib = Some(value),
            "CHANNELID" => channel = Some(value),
            _ => {}
        }
    }
    flush(&mut name, &mut device, &mut lib, &mut channel);
    out
}

fn parse_number(s: &str) -> Option<u16> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What the serving thread hands back: the card, `serve`'s result and its events.
type Served<C> = (C, Result<(), vpcd::VpcdError>, Vec<String>);

/// A card served to a vpcd reader on its own thread, as `keyroll card serve` does. Dropping it pulls
/// the card (stop flag, then join), so a failing test never leaves a card in a reader.
pub struct ServedCard<C: SmartCard + Send + 'static> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Served<C>>>,
    events: Arc<Mutex<Vec<String>>>,
}

impl<C: SmartCard + Send + 'static> ServedCard<C> {
    /// Serve `card` to vpcd at `addr` (e.g. `reader.addr()`).
    pub fn start(mut card: C, addr: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (stop2, events2, addr) = (stop.clone(), events.clone(), addr.to_string());
        let thread = std::thread::spawn(move || {
            let r = vpcd::serve(&mut card, &addr, &stop2, |e: VpcdEvent| {
                events2.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{e:?}"));
            });
            let events = events2.lock().unwrap_or_else(|e| e.into_inner()).clone();
            (card, r, events)
        });
        ServedCard { stop, thread: Some(thread), events }
    }

    /// The connector's events so far, as `Debug` text (no data bytes: see `VpcdEvent`).
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Pull the card: set the stop flag and wait for `serve` to return. Gives back the card, what
    /// `serve` returned, its events and how long stopping took.
    pub fn stop(mut self) -> (C, Result<(), vpcd::VpcdError>, Vec<String>, Duration) {
        let started = Instant::now();
        self.stop.store(true, Ordering::SeqCst);
        let (card, r, events) = self.thread.take().expect("stopped once").join().expect("serve panicked");
        (card, r, events, started.elapsed())
    }
}

impl<C: SmartCard + Send + 'static> Drop for ServedCard<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
