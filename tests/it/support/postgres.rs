//! Test harness for PostgreSQL: one private cluster per machine, shared by every test binary, and a
//! fresh database per test.
//!
//! * **Private cluster.** Data in `/tmp/keyroll-pg/data`, unix socket in `/tmp/keyroll-pg`, TCP port
//!   [`PORT`] on 127.0.0.1 only, log in `/tmp/keyroll-pg/log`. `initdb` refuses to run as root, so as
//!   root the harness runs `initdb` and `pg_ctl` with `runuser -u postgres --` on a directory that user
//!   owns (Debian's `postgresql` package creates the user). Unix-socket connections are trusted; TCP
//!   connections need the password [`PASSWORD`] of role `keyroll` (the wrong-password test).
//! * **Shared safely.** Starting is serialised by an exclusive `flock` on `/tmp/keyroll-pg/lock`
//!   (separate test binaries, other worktrees); a cluster already answering is reused.
//! * **Stopped at the end** by `scripts/test` (`pg_ctl stop` on the same directory) when no test
//!   process still uses it: every process that uses the cluster holds a shared `flock` on
//!   `/tmp/keyroll-pg/users` until it exits, and scripts/test stops the cluster only if it can take
//!   that lock exclusively. A developer's `cargo test` leaves it running for the next run.
//! * **Per test:** [`database`] creates `kr_<pid>_<n>` and drops it when the guard goes.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const DIR: &str = "/tmp/keyroll-pg";
pub const PORT: u16 = 54329;
/// The TCP role's password (a test fixture, not a secret).
pub const PASSWORD: &str = "keyroll-test";

static STARTED: Mutex<bool> = Mutex::new(false);
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| p.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0));
    let dir = versions.last().expect(
        "PostgreSQL is not installed (/usr/lib/postgresql/*/bin): run ./scripts/test, which installs Debian's postgresql",
    );
    dir.join("bin").join(name)
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the cluster's owner (`postgres` when we are root).
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn data() -> PathBuf {
    Path::new(DIR).join("data")
}

fn running() -> bool {
    let mut c = as_owner(&bin("pg_ctl"));
    c.arg("status").arg("-D").arg(data());
    c.output().map(|o| o.status.success()).unwrap_or(false)
}

/// Start the machine's test cluster if it is not running (idempotent, safe across processes).
pub fn ensure() {
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if *started {
        return;
    }
    fs::create_dir_all(DIR).unwrap();
    let _ = fs::set_permissions(DIR, fs::Permissions::from_mode(0o777));
    // Held (shared) until this process exits: scripts/test stops the cluster only when it can take
    // this lock exclusively, i.e. when no test process is using it. std opens files close-on-exec, so
    // the server started below does not inherit the lock.
    let users = OpenOptions::new().create(true).truncate(false).write(true).open(Path::new(DIR).join("users")).unwrap();
    let _ = fs::set_permissions(Path::new(DIR).join("users"), fs::Permissions::from_mode(0o666));
    use std::os::fd::AsRawFd;
    assert_eq!(unsafe { libc::flock(users.as_raw_fd(), libc::LOCK_SH) }, 0, "flock {DIR}/users");
    std::mem::forget(users);
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(Path::new(DIR).join("lock")).unwrap();
    let _ = fs::set_permissions(Path::new(DIR).join("lock"), fs::Permissions::from_mode(0o666));
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0, "flock {DIR}/lock");
    if !data().join("PG_VERSION").exists() {
        let _ = fs::remove_dir_all(data());
        let pwfile = Path::new(DIR).join("pwfile");
        fs::write(&pwfile, "postgres\n").unwrap();
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = as_owner(&bin("initdb"));
        c.arg("-D").arg(data()).args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
        ]);
        c.arg("--no-sync").arg("--pwfile").arg(&pwfile);
        run(c, "initdb");
        // Only this machine: the socket directory and 127.0.0.1.
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {PORT}\nunix_socket_directories = '{DIR}'\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\nshared_buffers = 64MB\n"
        );
        let mut f = OpenOptions::new().append(true).open(data().join("postgresql.conf")).unwrap();
        std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
    }
    if !running() {
        let mut c = as_owner(&bin("pg_ctl"));
        c.arg("start").arg("-w").arg("-D").arg(data()).arg("-l").arg(Path::new(DIR).join("log"));
        run(c, "pg_ctl start");
        // The role the TCP tests log in as.
        psql(
            "postgres",
            &format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'keyroll') THEN \
             CREATE ROLE keyroll LOGIN SUPERUSER PASSWORD '{PASSWORD}'; END IF; END $$"
            ),
        );
    }
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_UN) };
    *started = true;
}

/// Stop the cluster (scripts/test, at the end).
pub fn stop() {
    if data().join("PG_VERSION").exists() && running() {
        let mut c = as_owner(&bin("pg_ctl"));
        c.arg("stop").arg("-m").arg("fast").arg("-D").arg(data());
        run(c, "pg_ctl stop");
    }
}

/// Run SQL with psql over the socket as `postgres`.
pub fn psql(db: &str, sql: &str) -> String {
    let out = Command::new(bin("psql"))
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            DIR,
            "-p",
            &PORT.to_string(),
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .expect("psql");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A database of the test cluster, dropped with the guard.
pub struct Database {
    pub name: String,
}

impl Database {
    /// Its URL over the unix socket (trusted, no password).
    pub fn url(&self) -> String {
        format!("postgres://postgres@/{}?host={DIR}&port={PORT}", self.name)
    }

    /// Its URL over TCP with the given password for role `keyroll`.
    pub fn tcp_url(&self, password: &str) -> String {
        format!("postgres://keyroll:{password}@127.0.0.1:{PORT}/{}", self.name)
    }

    pub fn psql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    /// A new database holding a copy of this one (PostgreSQL's template copy).
    pub fn clone_database(&self) -> Database {
        let name = format!("kr_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        psql("postgres", &format!("CREATE DATABASE {name} TEMPLATE {}", self.name));
        Database { name }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new(bin("psql"))
            .args(["-X", "-q", "-h", DIR, "-p", &PORT.to_string(), "-U", "postgres", "-d", "postgres", "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .output();
    }
}

/// A new, empty database on the test cluster (started if needed).
pub fn database() -> Database {
    ensure();
    let name = format!("kr_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    psql("postgres", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    psql("postgres", &format!("CREATE DATABASE {name}"));
    Database { name }
}

/// A login role of the test cluster, made for one database (unix socket: trusted, no password), with
/// the rights `grants` gives it (`{role}` stands for its name). Dropped with the guard, its grants first.
pub struct Role {
    pub name: String,
    db: String,
}

impl Database {
    pub fn role(&self, suffix: &str, grants: &str) -> Role {
        let name = format!("{}_{suffix}", self.name);
        psql("postgres", &format!("DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN"));
        if !grants.is_empty() {
            self.psql(&grants.replace("{role}", &name));
        }
        Role { name, db: self.name.clone() }
    }

    /// Its URL over the unix socket, logged in as `role`.
    pub fn url_as(&self, role: &Role) -> String {
        format!("postgres://{}@/{}?host={DIR}&port={PORT}", role.name, self.name)
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        for (db, sql) in [
            (&self.db, format!("DROP OWNED BY {}", self.name)),
            (&"postgres".to_string(), format!("DROP ROLE IF EXISTS {}", self.name)),
        ] {
            let _ = Command::new(bin("psql"))
                .args(["-X", "-q", "-h", DIR, "-p", &PORT.to_string(), "-U", "postgres", "-d", db, "-c", &sql])
                .output();
        }
    }
}
