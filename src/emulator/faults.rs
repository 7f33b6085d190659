//! Seeded randomness: injected faults, latency, and the per-answer pick of `mixed`
//! Retry-After forms. Each concern has its own generator derived from `--seed`, so turning
//! latency on does not change which requests fail: the same request sequence under the same
//! seed always meets the same faults.

use std::time::Duration;

use super::RetryAfterMode;
use super::throttle::RetryForm;

/// What to do to one assignment request that passed the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// 503 ServiceUnavailable, not executed.
    Unavailable,
    /// 504 GatewayTimeout, not executed.
    GatewayTimeout,
    /// Execute (store), then drop the connection without answering.
    Drop,
}

#[derive(Debug)]
pub(crate) struct Faults {
    faults: fastrand::Rng,
    latency: fastrand::Rng,
    forms: fastrand::Rng,
    p503: f64,
    p504: f64,
    pdrop: f64,
    mean_latency: Option<Duration>,
}

impl Faults {
    pub(crate) fn new(
        seed: u64,
        p503: f64,
        p504: f64,
        pdrop: f64,
        mean_latency: Option<Duration>,
    ) -> Self {
        Self {
            faults: fastrand::Rng::with_seed(seed),
            latency: fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15),
            forms: fastrand::Rng::with_seed(seed ^ 0xc2b2_ae3d_27d4_eb4f),
            p503,
            p504,
            pdrop,
            mean_latency,
        }
    }

    /// One draw per assignment request: the three faults split one uniform number, so their
    /// probabilities add up (past 1 the later ones are crowded out).
    pub(crate) fn roll(&mut self) -> Fault {
        let u = self.faults.f64();
        if u < self.p503 {
            Fault::Unavailable
        } else if u < self.p503 + self.p504 {
            Fault::GatewayTimeout
        } else if u < self.p503 + self.p504 + self.pdrop {
            Fault::Drop
        } else {
            Fault::None
        }
    }

    /// Exponentially distributed delay with the configured mean (none when unset).
    pub(crate) fn latency(&mut self) -> Option<Duration> {
        let mean = self.mean_latency?;
        let u = self.latency.f64();
        let factor = -(1.0 - u).ln();
        // try_from: a huge configured mean must not panic on overflow.
        Some(Duration::try_from_secs_f64(mean.as_secs_f64() * factor).unwrap_or(mean))
    }

    /// The form of one 429's Retry-After; `mixed` draws among the four.
    pub(crate) fn retry_form(&mut self, mode: RetryAfterMode) -> RetryForm {
        match mode {
            RetryAfterMode::Seconds => RetryForm::Seconds,
            RetryAfterMode::Fractional => RetryForm::Fractional,
            RetryAfterMode::Date => RetryForm::Date,
            RetryAfterMode::None => RetryForm::None,
            RetryAfterMode::Mixed => match self.forms.usize(0..4) {
                0 => RetryForm::Seconds,
                1 => RetryForm::Fractional,
                2 => RetryForm::Date,
                _ => RetryForm::None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faults() {
        let run = |seed| {
            let mut f = Faults::new(seed, 0.3, 0.2, 0.1, None);
            (0..100).map(|_| f.roll()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let all = run(7);
        for kind in [
            Fault::None,
            Fault::Unavailable,
            Fault::GatewayTimeout,
            Fault::Drop,
        ] {
            assert!(all.contains(&kind), "{kind:?} never drawn");
        }
    }

    #[test]
    fn no_faults_when_probabilities_are_zero() {
        let mut f = Faults::new(1, 0.0, 0.0, 0.0, None);
        assert!((0..1000).all(|_| f.roll() == Fault::None));
        assert_eq!(f.latency(), None);
    }

    #[test]
    fn latency_mean_is_roughly_right() {
        let mut f = Faults::new(3, 0.0, 0.0, 0.0, Some(Duration::from_millis(100)));
        let n = 2000;
        let total: Duration = (0..n).filter_map(|_| f.latency()).sum();
        let mean = total / n;
        assert!(
            mean > Duration::from_millis(80) && mean < Duration::from_millis(120),
            "{mean:?}"
        );
    }
}
