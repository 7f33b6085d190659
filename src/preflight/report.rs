//! What preflight found: one line per check, each failure with how to fix it, and the request
//! `run` would send first. One screen of text; the exit code follows from the marks.

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Ok,
    /// `run` would fail on this.
    Fail,
    /// Worth knowing, decides nothing.
    Note,
}

/// One line of the report, with the fix when it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub mark: Mark,
    pub text: String,
    /// Indented lines under the check (a sample of identities).
    pub details: Vec<String>,
    pub fix: Option<String>,
}

/// Everything preflight found. Nothing in it was written to Graph.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    /// No token could be had, or Graph refused the one given (401): exit 3.
    pub auth_failed: bool,
    /// What `run` would send for the first valid row: the method and URL line, then the body.
    pub request: Option<(String, String)>,
}

impl Report {
    pub fn ok(&mut self, text: impl Into<String>) -> &mut Check {
        self.push(Mark::Ok, text.into(), None)
    }

    pub fn note(&mut self, text: impl Into<String>) -> &mut Check {
        self.push(Mark::Note, text.into(), None)
    }

    pub fn fail(&mut self, text: impl Into<String>, fix: impl Into<String>) -> &mut Check {
        self.push(Mark::Fail, text.into(), Some(fix.into()))
    }

    fn push(&mut self, mark: Mark, text: String, fix: Option<String>) -> &mut Check {
        self.checks.push(Check {
            mark,
            text,
            details: Vec::new(),
            fix,
        });
        let last = self.checks.len() - 1;
        &mut self.checks[last]
    }

    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| c.mark == Mark::Fail).count()
    }

    /// 0 everything `run` needs answered · 1 something would fail · 3 authentication failed.
    pub fn exit_code(&self) -> u8 {
        if self.auth_failed {
            3
        } else if self.failures() > 0 {
            1
        } else {
            0
        }
    }

    /// The report for stdout.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for check in &self.checks {
            let mark = match check.mark {
                Mark::Ok => "✓",
                Mark::Fail => "✗",
                Mark::Note => "·",
            };
            s.push_str(&format!("{mark} {}\n", check.text));
            for line in &check.details {
                s.push_str(&format!("    {line}\n"));
            }
            if let Some(fix) = &check.fix {
                s.push_str(&format!("    fix: {fix}\n"));
            }
        }
        if let Some((line, body)) = &self.request {
            s.push_str(&format!("  run would send first:\n    {line}\n"));
            for body_line in body.lines() {
                s.push_str(&format!("    {body_line}\n"));
            }
        }
        let failures = self.failures();
        s.push_str(&match failures {
            0 => "preflight: ok: every check passed; nothing was written\n".to_string(),
            n => format!(
                "preflight: FAIL: {n} check{} failed; nothing was written\n",
                if n == 1 { "" } else { "s" }
            ),
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_decide_the_exit_code() {
        let mut report = Report::default();
        report.ok("token");
        report.note("claims");
        assert_eq!(report.exit_code(), 0);
        assert!(
            report
                .render()
                .ends_with("every check passed; nothing was written\n")
        );
        report.fail("route", "grant it");
        assert_eq!(report.exit_code(), 1);
        let text = report.render();
        assert!(text.contains("✗ route\n    fix: grant it\n"), "{text}");
        assert!(text.contains("1 check failed"), "{text}");
        report.auth_failed = true;
        assert_eq!(report.exit_code(), 3);
    }
}
