//! The emulator's own notation for a throttle window, `COUNT/DURATION` (`100/20s`, `5/s`,
//! `10/500ms`), as Graph states its limits. The emulator keeps its own type rather than the
//! client's rate: it is an independent judge of the client, and shares none of its code.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// At most `count` requests in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub per: Duration,
}

impl Limit {
    pub const fn new(count: u32, per: Duration) -> Self {
        Self { count, per }
    }

    /// The identity-and-access (directory) write limit: 3,000 per 2 min 30 s per app per
    /// tenant.
    pub const fn directory() -> Self {
        Self::new(3000, Duration::from_secs(150))
    }
}

impl Default for Limit {
    /// Intune's documented write limit: 100 per 20 s per app per tenant.
    fn default() -> Self {
        Self::new(100, Duration::from_secs(20))
    }
}

/// A limit that does not read as `COUNT/DURATION`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid limit {input:?}: {reason} (expected COUNT/DURATION, e.g. 100/20s, 5/s, 10/500ms)")]
pub struct LimitError {
    input: String,
    reason: String,
}

impl FromStr for Limit {
    type Err = LimitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| LimitError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let (count, per) = s.trim().split_once('/').ok_or_else(|| err("missing '/'"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| err("COUNT is not a whole number"))?;
        if count == 0 {
            return Err(err("COUNT must be at least 1"));
        }
        let per = per.trim();
        // `5/s` means "5 per second": a bare unit is one of that unit.
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            humantime::parse_duration(per)
        } else {
            humantime::parse_duration(&format!("1{per}"))
        }
        .map_err(|e| err(&format!("DURATION: {e}")))?;
        if per.is_zero() {
            return Err(err("DURATION must be longer than zero"));
        }
        Ok(Self { count, per })
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits_the_way_graph_states_them() {
        let ok = |s: &str, count, per| assert_eq!(s.parse(), Ok(Limit::new(count, per)), "{s}");
        ok("100/20s", 100, Duration::from_secs(20));
        ok(" 5 / s ", 5, Duration::from_secs(1));
        ok("10/500ms", 10, Duration::from_millis(500));
        ok("3000/150s", 3000, Duration::from_secs(150));
        ok("3/min", 3, Duration::from_secs(60));
        assert_eq!(Limit::default().to_string(), "100/20s");
        assert_eq!(Limit::directory().to_string(), "3000/2m 30s");
    }

    #[test]
    fn refuses_malformed_limits() {
        for bad in [
            "", "100", "0/20s", "x/20s", "100/0s", "100/soon", "-1/s", "1.5/s",
        ] {
            assert!(bad.parse::<Limit>().is_err(), "{bad:?} accepted");
        }
    }
}
