//! How many rows may be in flight: pinned by `--concurrency`, or following the service's
//! latency so that a window's worth of requests goes out in a small part of the window.
//!
//! Too few seats leave the end of each window's burst waiting on answers (at 200 ms latency,
//! 4 seats send Intune's 100 writes in 5 s of its 20 s window); too many only matter during
//! the burst. So the adaptive default aims for a window's COUNT in a fortieth of its DURATION at
//! the measured latency, between [`MIN`] and [`CAP`].
//!
//! The first window's burst matters most: each slot is reused one window after its answer, so
//! the spread of that first burst repeats in every later window and is paid once at the end.
//! Hence a run starts with [`START`] seats before any latency is known, not the minimum.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Fewest seats an adaptive run keeps.
pub const MIN: usize = 4;
/// Seats an adaptive run starts with, before the first answer tells the latency.
pub const START: usize = 16;
/// Most seats an adaptive run takes.
pub const CAP: usize = 32;

#[derive(Debug)]
pub struct Seats {
    seats: Arc<Semaphore>,
    /// Seats in force (taken or free).
    total: AtomicUsize,
    adaptive: bool,
}

impl Seats {
    pub fn fixed(n: usize) -> Self {
        Self::new(n.max(1), false)
    }

    pub fn adaptive() -> Self {
        Self::new(START, true)
    }

    fn new(n: usize, adaptive: bool) -> Self {
        Self {
            seats: Arc::new(Semaphore::new(n)),
            total: AtomicUsize::new(n),
            adaptive,
        }
    }

    /// The most rows that can ever be in flight at once.
    pub fn most(&self) -> usize {
        if self.adaptive { CAP } else { self.current() }
    }

    /// The most rows started at once: in flight, or waiting out a retry delay without a seat.
    /// Bounded so that an outage, which sends every row it meets to wait, cannot draw the
    /// whole input into memory.
    pub fn started_most(&self) -> usize {
        self.most() * 4
    }

    pub fn current(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Wait for a seat; held while the row is in flight.
    pub async fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.seats.clone().acquire_owned().await.ok()
    }

    /// Follow `wanted` (adaptive only), within [`MIN`]..=[`CAP`]. Fewer seats take effect as
    /// seats come free: a row in flight is never cut short.
    pub fn follow(&self, wanted: usize) {
        if !self.adaptive {
            return;
        }
        let wanted = wanted.clamp(MIN, CAP);
        let total = self.current();
        if wanted > total {
            self.seats.add_permits(wanted - total);
            self.total.store(wanted, Ordering::Relaxed);
        } else if wanted < total {
            let gone = self.seats.forget_permits(total - wanted);
            self.total.store(total - gone, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn adaptive_seats_follow_within_bounds_and_pinned_ones_do_not() {
        let s = Seats::adaptive();
        assert_eq!((s.current(), s.most()), (START, CAP));
        s.follow(11);
        assert_eq!(s.current(), 11);
        s.follow(1000);
        assert_eq!(s.current(), CAP);
        // Fewer seats while some are taken: only free ones go at once.
        let held: Vec<_> = futures::future::join_all((0..30).map(|_| s.take())).await;
        s.follow(5);
        assert_eq!(s.current(), 30);
        drop(held);
        s.follow(1);
        assert_eq!(s.current(), MIN);
        let pinned = Seats::fixed(7);
        pinned.follow(20);
        assert_eq!((pinned.current(), pinned.most()), (7, 7));
    }
}
