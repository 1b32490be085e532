//! Command-line cases as files (after rage's `tests/cmd/`): each `tests/cmd/*.toml` is one run of the
//! real binary in a scratch directory, with the expected exit status and output. Error cases are named
//! after the error they trigger.
//!
//! A case file's fields:
//! - `args` (string, split like a shell would): the command line after `keyroll`;
//! - `setup` (strings): commands run first, each must succeed (e.g. `init --issuer T`);
//! - `files` (table name -> text): files written into the scratch directory before the run;
//! - `stdin` (string), `env` (table), `env_remove` (strings): the process environment. By default
//!   `KEYROLL_DB=keyroll.db` and `KEYROLL_IDENTITY=keyroll.db.identity` are set;
//! - `status` (integer, default 0);
//! - `stdout`, `stderr` (strings): the whole output, where `[..]` matches any text within a line and a
//!   line `...` any number of lines; `[CWD]` stands for the scratch directory;
//! - `stdout_contains`, `stderr_contains` (strings): lines or fragments that must appear;
//! - `json_stdout` / `json_stderr` (strings): top-level keys the JSON document must have (and
//!   `"schema": "keyroll/1"`);
//! - `hint` (bool, default true when `status` != 0): stderr's last line starts with `hint: ` (or the
//!   JSON error has a non-empty `hint`);
//! - `created` (strings): paths that must exist afterwards.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Case {
    args: String,
    #[serde(default)]
    setup: Vec<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    stdin: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    env_remove: Vec<String>,
    #[serde(default)]
    status: i32,
    stdout: Option<String>,
    stderr: Option<String>,
    #[serde(default)]
    stdout_contains: Vec<String>,
    #[serde(default)]
    stderr_contains: Vec<String>,
    json_stdout: Option<Vec<String>>,
    json_stderr: Option<Vec<String>>,
    hint: Option<bool>,
    #[serde(default)]
    created: Vec<String>,
}

fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cmd")
}

fn command(dir: &Path, case: &Case, line: &str) -> Command {
    let args = shlex::split(line).unwrap_or_else(|| panic!("cannot split {line:?}"));
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyroll"));
    c.current_dir(dir)
        .env("KEYROLL_DB", "keyroll.db")
        .env("KEYROLL_IDENTITY", "keyroll.db.identity")
        .env("NO_COLOR", "1")
        .env_remove("XDG_STATE_HOME")
        .args(args);
    for (k, v) in &case.env {
        c.env(k, v);
    }
    for k in &case.env_remove {
        c.env_remove(k);
    }
    c
}

/// `expected` with `[..]` (any text in a line), `...` lines (any lines) and `[CWD]`.
fn matches(expected: &str, actual: &str) -> bool {
    let exp: Vec<&str> = expected.lines().collect();
    let act: Vec<&str> = actual.lines().collect();
    fn line_matches(pattern: &str, line: &str) -> bool {
        let parts: Vec<&str> = pattern.split("[..]").collect();
        if parts.len() == 1 {
            return pattern == line;
        }
        let mut rest = line;
        for (i, part) in parts.iter().enumerate() {
            if i == 0 {
                let Some(r) = rest.strip_prefix(part) else { return false };
                rest = r;
            } else if i == parts.len() - 1 {
                return rest.ends_with(part);
            } else {
                match rest.find(part) {
                    Some(at) => rest = &rest[at + part.len()..],
                    None => return false,
                }
            }
        }
        true
    }
    fn go(exp: &[&str], act: &[&str]) -> bool {
        match exp.first() {
            None => act.is_empty(),
            Some(&"...") => (0..=act.len()).any(|k| go(&exp[1..], &act[k..])),
            Some(p) => !act.is_empty() && line_matches(p, act[0]) && go(&exp[1..], &act[1..]),
        }
    }
    go(&exp, &act)
}

fn check_json(what: &str, text: &str, keys: &[String]) -> Result<serde_json::Value, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("{what} is not one JSON document ({e}):\n{text}"))?;
    if v["schema"] != "keyroll/1" {
        return Err(format!("{what} lacks \"schema\": \"keyroll/1\":\n{text}"));
    }
    for k in keys {
        if v.get(k).is_none() {
            return Err(format!("{what} lacks key {k:?}:\n{text}"));
        }
    }
    Ok(v)
}

fn run_case(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let case: Case = toml::from_str(&text).map_err(|e| format!("not a case file: {e}"))?;
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = scratch.path();
    for (name, content) in &case.files {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(p, content).map_err(|e| e.to_string())?;
    }
    for line in &case.setup {
        let o = command(dir, &case, line).output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("setup `{line}` failed: {}", String::from_utf8_lossy(&o.stderr)));
        }
    }
    let mut cmd = command(dir, &case, &case.args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(input) = &case.stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).map_err(|e| e.to_string())?;
    }
    drop(child.stdin.take());
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    let cwd = dir.display().to_string();
    let stdout = String::from_utf8_lossy(&o.stdout).replace(&cwd, "[CWD]");
    let stderr = String::from_utf8_lossy(&o.stderr).replace(&cwd, "[CWD]");
    let shown = || format!("status {:?}\n--- stdout\n{stdout}--- stderr\n{stderr}", o.status.code());
    if o.status.code() != Some(case.status) {
        return Err(format!("expected status {}, got {}", case.status, shown()));
    }
    if let Some(exp) = &case.stdout
        && !matches(exp, &stdout)
    {
        return Err(format!("stdout differs; expected\n{exp}got {}", shown()));
    }
    if let Some(exp) = &case.stderr
        && !matches(exp, &stderr)
    {
        return Err(format!("stderr differs; expected\n{exp}got {}", shown()));
    }
    for s in &case.stdout_contains {
        if !stdout.contains(s.as_str()) {
            return Err(format!("stdout lacks {s:?}: {}", shown()));
        }
    }
    for s in &case.stderr_contains {
        if !stderr.contains(s.as_str()) {
            return Err(format!("stderr lacks {s:?}: {}", shown()));
        }
    }
    if let Some(keys) = &case.json_stdout {
        check_json("stdout", &stdout, keys)?;
    }
    let mut json_error = None;
    if let Some(keys) = &case.json_stderr {
        json_error = Some(check_json("stderr", &stderr, keys)?);
    }
    if case.hint.unwrap_or(case.status != 0) {
        match json_error {
            Some(v) => {
                if v["error"]["hint"].as_str().is_none_or(str::is_empty) {
                    return Err(format!("the JSON error has no hint: {}", shown()));
                }
            }
            None => {
                if !stderr.trim_end().lines().last().is_some_and(|l| l.starts_with("hint: ")) {
                    return Err(format!("stderr does not end with a `hint:` line: {}", shown()));
                }
            }
        }
    }
    for f in &case.created {
        if !dir.join(f).exists() {
            return Err(format!("{f} was not created: {}", shown()));
        }
    }
    Ok(())
}

#[test]
fn every_case_file() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/cmd exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 20, "expected the case files in tests/cmd");
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|p| run_case(p).err().map(|e| format!("{}: {e}", p.file_name().unwrap().to_string_lossy())))
        .collect();
    assert!(failures.is_empty(), "{} of {} case(s) failed:\n\n{}", failures.len(), paths.len(), failures.join("\n\n"));
}

#[test]
fn the_matcher_understands_its_patterns() {
    assert!(matches("a [..] c\n...\nz", "a b c\nx\ny\nz"));
    assert!(matches("a\n...", "a"));
    assert!(!matches("a [..] c", "a b d"));
    assert!(!matches("a", "a\nb"));
}
