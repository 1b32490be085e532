//! One verdict type for every "does this hold?" page keyroll prints: `audit report` and `demo` build
//! theirs from the same checks (the chain and log checks are the report's), so the two can never
//! disagree about one database.

use serde::Serialize;

/// One named check with its outcome and what it saw.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// A stable name (`chains_valid`, `log_intact`, `keys_converged`, `value_conserved`,
    /// `rollout_verified`).
    pub name: &'static str,
    pub ok: bool,
    /// What the check saw, for people.
    pub detail: String,
}

/// A list of checks; it passes when every check does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn new(checks: Vec<Check>) -> Self {
        Verdict { ok: checks.iter().all(|c| c.ok), checks }
    }

    pub fn push(&mut self, check: Check) {
        self.checks.push(check);
        self.ok = self.checks.iter().all(|c| c.ok);
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// `PASS` or `FAIL`.
    pub fn word(&self) -> &'static str {
        if self.ok { "PASS" } else { "FAIL" }
    }

    /// The failed checks, "name: detail; …" (for the error message of a failed verdict).
    pub fn failures(&self) -> String {
        self.checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect::<Vec<_>>().join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_passes_only_when_every_check_does() {
        let c = |ok| Check { name: "x", ok, detail: String::new() };
        assert!(Verdict::new(vec![c(true), c(true)]).ok);
        assert!(!Verdict::new(vec![c(true), c(false)]).ok);
        let mut v = Verdict::new(vec![c(true)]);
        v.push(c(false));
        assert!(!v.ok);
        assert_eq!(v.word(), "FAIL");
    }
}
