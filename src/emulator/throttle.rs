//! Graph's throttling as the emulator plays it: per tenant and per service ([`Bucket`]: Intune,
//! the directory), a sliding window over writes, a separate (10× larger) window over reads,
//! and the bookkeeping that tells a client that came back before its `Retry-After` (a
//! violation) from one whose request was merely already in flight when the 429 went out.
//!
//! Pure logic: every method takes the current instant, so unit tests drive time by hand.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::Limit;

/// Reads get this many times the write limit, the way Intune's "any request" bucket is ten
/// times its write bucket.
const READ_FACTOR: u32 = 10;

/// At most `count` requests in any window of `per`. Every request is recorded, including the
/// ones answered 429: Graph keeps counting while a client is throttled, so hammering a
/// throttled endpoint keeps it throttled.
#[derive(Debug)]
struct Window {
    count: usize,
    per: Duration,
    hits: VecDeque<Instant>,
}

impl Window {
    fn new(count: u32, per: Duration) -> Self {
        Self {
            // A zero count would make "time until room" undefined; one is the strictest limit.
            count: (count as usize).max(1),
            per,
            hits: VecDeque::new(),
        }
    }

    /// Record a request at `now`. `None` when it fits the window, else how long until a
    /// request would fit again.
    fn hit(&mut self, now: Instant) -> Option<Duration> {
        while let Some(&oldest) = self.hits.front() {
            if now.saturating_duration_since(oldest) >= self.per {
                self.hits.pop_front();
            } else {
                break;
            }
        }
        self.hits.push_back(now);
        let len = self.hits.len();
        if len <= self.count {
            return None;
        }
        // A later request fits once at most count-1 recorded hits remain, i.e. once the
        // (len-count)-th oldest (0-based) has left the window.
        let must_expire = self.hits.get(len - self.count).copied().unwrap_or(now);
        Some(
            must_expire
                .checked_add(self.per)
                .map_or(self.per, |room| room.saturating_duration_since(now)),
        )
    }
}

/// The last "come back at" a tenant was told, and when the first 429 of that throttle episode
/// went out (the in-flight grace runs from there, so a client that keeps hammering cannot
/// keep renewing its own grace).
#[derive(Debug, Clone, Copy)]
struct Promise {
    first_sent: Instant,
    until: Instant,
}

/// One service's windows for one tenant: its writes, its reads (ten times the room), and the
/// last promise a write 429 made.
#[derive(Debug)]
struct Windows {
    writes: Window,
    reads: Window,
    promise: Option<Promise>,
}

impl Windows {
    fn new(limit: Limit) -> Self {
        Self {
            writes: Window::new(limit.count, limit.per),
            reads: Window::new(limit.count.saturating_mul(READ_FACTOR), limit.per),
            promise: None,
        }
    }
}

/// Which service's budget a request spends: every Graph service throttles on its own, so a
/// tenant busy with Intune writes can still write to its directory, and the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bucket {
    /// Intune (Autopilot identities, assignments, profiles).
    Intune,
    /// Entra ID's identity-and-access service (devices, groups, members).
    Directory,
}

#[derive(Debug)]
struct Tenant {
    intune: Windows,
    directory: Windows,
}

impl Tenant {
    fn bucket(&mut self, bucket: Bucket) -> &mut Windows {
        match bucket {
            Bucket::Intune => &mut self.intune,
            Bucket::Directory => &mut self.directory,
        }
    }
}

/// What the throttle says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// Answer 429. `wait` is the real time until the window has room (or until the last
    /// promised instant, for a violation); `violation` marks a request that came back early.
    Throttled {
        wait: Duration,
        violation: bool,
    },
}

/// Per-tenant throttle state for the whole emulator.
#[derive(Debug)]
pub(crate) struct Throttle {
    intune: Limit,
    directory: Limit,
    grace: Duration,
    tenants: HashMap<String, Tenant>,
}

impl Throttle {
    /// `intune` and `directory`: each service's write limit per tenant.
    pub(crate) fn new(intune: Limit, directory: Limit, grace: Duration) -> Self {
        Self {
            intune,
            directory,
            grace,
            tenants: HashMap::new(),
        }
    }

    fn windows(&mut self, bucket: Bucket, tenant: &str) -> &mut Windows {
        let (intune, directory) = (self.intune, self.directory);
        self.tenants
            .entry(tenant.to_string())
            .or_insert_with(|| Tenant {
                intune: Windows::new(intune),
                directory: Windows::new(directory),
            })
            .bucket(bucket)
    }

    /// A write to `bucket` (an assignment POST, one inner POST of a batch, a member write)
    /// arriving at `now`.
    pub(crate) fn write(&mut self, bucket: Bucket, tenant: &str, now: Instant) -> Verdict {
        let grace = self.grace;
        let t = self.windows(bucket, tenant);
        // The read window is Graph's "any request" bucket: a write takes a place in both.
        let over = match (t.writes.hit(now), t.reads.hit(now)) {
            (Some(w), Some(r)) => Some(w.max(r)),
            (w, r) => w.or(r),
        };
        let early = t.promise.and_then(|p| {
            (now < p.until && now.saturating_duration_since(p.first_sent) > grace)
                .then(|| p.until - now)
        });
        match (over, early) {
            (None, None) => Verdict::Allowed,
            (over, early) => Verdict::Throttled {
                wait: over.unwrap_or_default().max(early.unwrap_or_default()),
                violation: early.is_some(),
            },
        }
    }

    /// A read from `bucket` (a reconciling GET, a listing page). Own window, no violations.
    pub(crate) fn read(&mut self, bucket: Bucket, tenant: &str, now: Instant) -> Verdict {
        match self.windows(bucket, tenant).reads.hit(now) {
            None => Verdict::Allowed,
            Some(wait) => Verdict::Throttled {
                wait,
                violation: false,
            },
        }
    }

    /// Remember that a 429 sent at `now` told the tenant to wait `stated` before writing to
    /// `bucket` again. Only write answers make promises that violations are judged against.
    pub(crate) fn promised(
        &mut self,
        bucket: Bucket,
        tenant: &str,
        now: Instant,
        stated: Duration,
    ) {
        let t = self.windows(bucket, tenant);
        let until = now.checked_add(stated).unwrap_or(now);
        t.promise = Some(match t.promise {
            Some(p) if now < p.until => Promise {
                first_sent: p.first_sent,
                until: p.until.max(until),
            },
            _ => Promise {
                first_sent: now,
                until,
            },
        });
    }
}

/// The concrete form of one `Retry-After` answer (`mixed` resolves to one of these per answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryForm {
    Seconds,
    Fractional,
    Date,
    None,
}

/// Header value for a wait of `wait`, and the wait it actually states (never shorter than
/// `wait`, so a client that honours it exactly is never early). `None` for [`RetryForm::None`].
pub(crate) fn retry_after(
    form: RetryForm,
    wait: Duration,
    sys_now: SystemTime,
) -> Option<(String, Duration)> {
    match form {
        RetryForm::None => None,
        RetryForm::Seconds => {
            let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1) as u64;
            Some((secs.to_string(), Duration::from_secs(secs)))
        }
        RetryForm::Fractional => {
            let ms = wait.as_nanos().div_ceil(1_000_000).max(1) as u64;
            Some((
                format!("{}.{:03}", ms / 1000, ms % 1000),
                Duration::from_millis(ms),
            ))
        }
        RetryForm::Date => {
            // HTTP-dates have whole seconds: round the target up so it is never early.
            let target = sys_now
                .checked_add(wait.max(Duration::from_millis(1)))
                .unwrap_or(sys_now);
            let since_epoch = target.duration_since(UNIX_EPOCH).unwrap_or_default();
            let mut secs = since_epoch.as_secs();
            if since_epoch.subsec_nanos() > 0 {
                secs += 1;
            }
            let rounded = UNIX_EPOCH + Duration::from_secs(secs);
            let stated = rounded.duration_since(sys_now).unwrap_or(wait);
            Some((httpdate::fmt_http_date(rounded), stated))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Bucket::{Directory, Intune};

    fn spec(count: u32, secs: u64) -> Limit {
        Limit::new(count, Duration::from_secs(secs))
    }

    #[test]
    fn window_allows_count_then_throttles_until_room() {
        let mut t = Throttle::new(spec(2, 10), spec(1, 3600), Duration::ZERO);
        let t0 = Instant::now();
        assert_eq!(t.write(Intune, "a", t0), Verdict::Allowed);
        assert_eq!(
            t.write(Intune, "a", t0 + Duration::from_secs(1)),
            Verdict::Allowed
        );
        // Third at 2 s: room once the first two have left, i.e. at 11 s.
        assert_eq!(
            t.write(Intune, "a", t0 + Duration::from_secs(2)),
            Verdict::Throttled {
                wait: Duration::from_secs(9),
                violation: false
            }
        );
        // Other tenants are not affected.
        assert_eq!(t.write(Intune, "b", t0), Verdict::Allowed);
        // At 12 s all three (the throttled one counted too) have left the window.
        assert_eq!(
            t.write(Intune, "a", t0 + Duration::from_secs(12)),
            Verdict::Allowed
        );
    }

    #[test]
    fn early_return_is_a_violation_but_in_flight_is_not() {
        let grace = Duration::from_millis(250);
        let mut t = Throttle::new(spec(1, 10), spec(1, 3600), grace);
        let t0 = Instant::now();
        assert_eq!(t.write(Intune, "a", t0), Verdict::Allowed);
        let Verdict::Throttled { violation, .. } = t.write(Intune, "a", t0) else {
            panic!("second write should be throttled")
        };
        assert!(!violation);
        t.promised(Intune, "a", t0, Duration::from_secs(10));
        // In flight: within the grace.
        let v = t.write(Intune, "a", t0 + Duration::from_millis(100));
        assert!(
            matches!(
                v,
                Verdict::Throttled {
                    violation: false,
                    ..
                }
            ),
            "{v:?}"
        );
        // Came back too early.
        let v = t.write(Intune, "a", t0 + Duration::from_secs(1));
        assert!(
            matches!(
                v,
                Verdict::Throttled {
                    violation: true,
                    ..
                }
            ),
            "{v:?}"
        );
        // After the promise (and the window, which kept counting) no violation.
        let v = t.write(Intune, "a", t0 + Duration::from_secs(30));
        assert_eq!(v, Verdict::Allowed);
    }

    #[test]
    fn reads_have_ten_times_the_room_and_no_violations() {
        let mut t = Throttle::new(spec(1, 10), spec(1, 3600), Duration::ZERO);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(t.read(Intune, "a", t0), Verdict::Allowed);
        }
        assert!(matches!(
            t.read(Intune, "a", t0),
            Verdict::Throttled {
                violation: false,
                ..
            }
        ));
    }

    #[test]
    fn a_write_takes_a_place_in_the_any_request_window_too() {
        let mut t = Throttle::new(spec(2, 10), spec(1, 3600), Duration::ZERO);
        let t0 = Instant::now();
        // 2 writes, then 18 reads fill the 20 any-request places: the 19th read is refused.
        for _ in 0..2 {
            assert_eq!(t.write(Intune, "a", t0), Verdict::Allowed);
        }
        for _ in 0..18 {
            assert_eq!(t.read(Intune, "a", t0), Verdict::Allowed);
        }
        assert!(matches!(t.read(Intune, "a", t0), Verdict::Throttled { .. }));
    }

    #[test]
    fn the_directory_has_its_own_windows_and_promises() {
        let mut t = Throttle::new(spec(1, 10), spec(2, 100), Duration::ZERO);
        let t0 = Instant::now();
        assert_eq!(t.write(Intune, "a", t0), Verdict::Allowed);
        assert!(matches!(
            t.write(Intune, "a", t0),
            Verdict::Throttled { .. }
        ));
        t.promised(Intune, "a", t0, Duration::from_secs(10));
        // Intune refusing the tenant leaves its directory writes alone (and no violation).
        let later = t0 + Duration::from_secs(1);
        assert_eq!(t.write(Directory, "a", later), Verdict::Allowed);
        assert_eq!(t.write(Directory, "a", later), Verdict::Allowed);
        assert_eq!(
            t.write(Directory, "a", later),
            Verdict::Throttled {
                wait: Duration::from_secs(100),
                violation: false
            }
        );
        // Directory requests of any kind get ten times the write room; the 3 writes (the
        // refused one too) took 3 of the 20 places.
        for _ in 0..17 {
            assert_eq!(t.read(Directory, "a", later), Verdict::Allowed);
        }
        assert!(matches!(
            t.read(Directory, "a", later),
            Verdict::Throttled { .. }
        ));
        // And Intune's own window frees on its own schedule.
        let freed = t0 + Duration::from_secs(11);
        assert_eq!(t.write(Intune, "a", freed), Verdict::Allowed);
    }

    #[test]
    fn retry_after_forms_never_state_less_than_the_wait() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let wait = Duration::from_millis(1500);
        let (h, d) = retry_after(RetryForm::Seconds, wait, now).unwrap();
        assert_eq!((h.as_str(), d), ("2", Duration::from_secs(2)));
        let (h, d) = retry_after(RetryForm::Fractional, wait, now).unwrap();
        assert_eq!((h.as_str(), d), ("1.500", Duration::from_millis(1500)));
        let (h, d) = retry_after(RetryForm::Date, wait, now).unwrap();
        assert!(d >= wait, "{d:?}");
        assert_eq!(
            httpdate::parse_http_date(&h).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_002)
        );
        assert!(retry_after(RetryForm::None, wait, now).is_none());
        // Seconds never says 0.
        assert_eq!(
            retry_after(RetryForm::Seconds, Duration::ZERO, now)
                .unwrap()
                .0,
            "1"
        );
    }
}
