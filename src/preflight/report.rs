//! What preflight found: one line per check, each failure with how to fix it, and the request
//! `run` would send first. One screen of text; the exit code follows from the marks.

use crate::output::printable;

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
    /// With `--tenants`: one report per tenant, in the tenants file's order (the fields above
    /// are then empty). Each tenant is checked alone, as `run` would write to each alone.
    pub tenants: Vec<TenantReport>,
}

/// One tenant's checks, under its tenants file key.
#[derive(Debug, Clone)]
pub struct TenantReport {
    pub tenant: String,
    pub report: Report,
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

    /// Failed checks, every tenant's included.
    pub fn failures(&self) -> usize {
        let own = self.checks.iter().filter(|c| c.mark == Mark::Fail).count();
        own + self
            .tenants
            .iter()
            .map(|t| t.report.failures())
            .sum::<usize>()
    }

    /// 0 everything `run` needs answered (in every tenant) · 1 something would fail · 3
    /// authentication failed (in any tenant: the more urgent fix).
    pub fn exit_code(&self) -> u8 {
        if self.auth_failed || self.tenants.iter().any(|t| t.report.exit_code() == 3) {
            3
        } else if self.failures() > 0 {
            1
        } else {
            0
        }
    }

    /// The report for stdout: the checks, or a section per tenant headed by its key, then the
    /// verdict.
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.render_checks(&mut s);
        for t in &self.tenants {
            s.push_str(&format!("── tenant {} ──\n", t.tenant));
            t.report.render_checks(&mut s);
            s.push_str(&match t.report.failures() {
                0 => format!("tenant {}: ok\n", t.tenant),
                n => format!("tenant {}: FAIL: {}\n", t.tenant, checks_failed(n)),
            });
        }
        let failures = self.failures();
        let failing: Vec<&str> = self
            .tenants
            .iter()
            .filter(|t| t.report.failures() > 0)
            .map(|t| t.tenant.as_str())
            .collect();
        s.push_str(&match (failures, self.tenants.len()) {
            (0, 0) => "preflight: ok: every check passed; nothing was written\n".to_string(),
            (n, 0) => format!(
                "preflight: FAIL: {}; nothing was written\n",
                checks_failed(n)
            ),
            (0, n) => format!(
                "preflight: ok: every check passed in {}; nothing was written\n",
                plural(n, "tenant")
            ),
            (_, n) => format!(
                "preflight: FAIL: {} of {} failed ({}); nothing was written\n",
                failing.len(),
                plural(n, "tenant"),
                failing.join(", ")
            ),
        });
        s
    }

    /// The check lines and the request, without the verdict.
    fn render_checks(&self, s: &mut String) {
        for check in &self.checks {
            let mark = match check.mark {
                Mark::Ok => "✓",
                Mark::Fail => "✗",
                Mark::Note => "·",
            };
            // Checks carry token claims and Graph's messages: shown printable, never raw.
            s.push_str(&format!("{mark} {}\n", printable(&check.text)));
            for line in &check.details {
                s.push_str(&format!("    {}\n", printable(line)));
            }
            if let Some(fix) = &check.fix {
                s.push_str(&format!("    fix: {}\n", printable(fix)));
            }
        }
        if let Some((line, body)) = &self.request {
            s.push_str(&format!("  run would send first:\n    {line}\n"));
            for body_line in body.lines() {
                s.push_str(&format!("    {body_line}\n"));
            }
        }
    }
}

/// `1 check failed`, `2 checks failed`.
fn checks_failed(n: usize) -> String {
    format!("{} failed", plural(n, "check"))
}

fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
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

    #[test]
    fn tenants_get_a_section_each_and_any_failure_fails_the_whole() {
        let mut ok = Report::default();
        ok.ok("token");
        let mut bad = Report::default();
        bad.fail("route", "open a case");
        let section = |tenant: &str, report: &Report| TenantReport {
            tenant: tenant.into(),
            report: report.clone(),
        };
        let mut all = Report {
            tenants: vec![section("contoso", &ok), section("fabrikam", &bad)],
            ..Report::default()
        };
        assert_eq!(all.exit_code(), 1);
        let text = all.render();
        assert!(
            text.starts_with("── tenant contoso ──\n✓ token\ntenant contoso: ok\n"),
            "{text}"
        );
        assert!(
            text.contains("── tenant fabrikam ──\n✗ route\n    fix: open a case\n"),
            "{text}"
        );
        assert!(
            text.contains("tenant fabrikam: FAIL: 1 check failed\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "preflight: FAIL: 1 of 2 tenants failed (fabrikam); nothing was written\n"
            ),
            "{text}"
        );
        all.tenants[1].report.auth_failed = true;
        assert_eq!(all.exit_code(), 3);
        all.tenants.truncate(1);
        assert_eq!(all.exit_code(), 0);
        assert!(
            all.render()
                .ends_with("every check passed in 1 tenant; nothing was written\n")
        );
    }
}
