//! The dedupe index behind `duplicate of row N`: (device, target) fingerprint → first row, in
//! about 10 bytes per distinct row, so that a million-row file is checked in a few megabytes.
//! A 64-bit fingerprint stands in for the pair; a false "duplicate" needs a hash collision
//! (about 1 in 10^7 for a million-row file).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::cells::Device;
use crate::action::Work;

/// The key a row is deduplicated by: its device (the id when the row gives one, else the
/// serial number, case and spaces ignored), what its work makes distinct (an assignment's
/// whole target; see [`Work::hash_duplicate_key`]) and its tenant (one serial
/// number may be a device in each of two tenants).
pub(super) fn fingerprint(device: &Device, work: &Work, tenant: &Option<String>) -> u64 {
    // DefaultHasher::new() has fixed keys: the same file always dedupes the same way.
    let mut h = std::hash::DefaultHasher::new();
    match device.id() {
        Some(id) => id.hash(&mut h),
        None => {
            let serial = device.serial().unwrap_or_default();
            serial.trim().to_lowercase().hash(&mut h);
        }
    }
    work.hash_duplicate_key(&mut h);
    if let Some(t) = tenant {
        // Only with --tenants: a single-tenant file dedupes exactly as before.
        t.to_lowercase().hash(&mut h);
    }
    h.finish()
}

/// Capacity the recent map starts with. hashbrown rounds it up to 2^16 slots, which hold
/// 57,344 entries (7/8 full) in about 1 MiB; the map is merged before it would grow.
const RECENT_START: usize = 32 * 1024;
/// The sorted array may be this many times the recent map's capacity (about 3.7 million
/// rows at the start) before the recent map doubles. Each merge moves the whole array, so
/// a recent map that never grew would make merging quadratic in the input; growing it
/// keeps merging linear at a fraction of a byte per row.
const SORTED_PER_RECENT: usize = 64;
/// Top fingerprint bits that pick a bucket of the sorted array. The directory of 2^16
/// bucket starts costs 256 KiB once (from the first merge on, so small files never pay
/// it), and it lets an entry leave those 16 bits out.
const DIRECTORY_BITS: u32 = 16;
const BUCKETS: usize = 1 << DIRECTORY_BITS;
const LOW_BITS: u32 = 64 - DIRECTORY_BITS;

/// One row as kept in the sorted array: the fingerprint's low 48 bits (its top 16 are
/// the bucket it sits in) and the row. 10 bytes, where `(u64, u64)` takes 16.
#[derive(Clone, Copy, Default)]
#[repr(C, packed(2))]
struct Entry {
    low: u32,
    mid: u16,
    row: u32,
}

impl Entry {
    fn new(fp: u64, row: u32) -> Self {
        Self {
            low: fp as u32,
            mid: (fp >> 32) as u16,
            row,
        }
    }

    /// The fingerprint's low 48 bits.
    fn key(self) -> u64 {
        (u64::from(self.mid) << 32) | u64::from(self.low)
    }
}

fn bucket(fp: u64) -> usize {
    (fp >> LOW_BITS) as usize
}

fn low(fp: u64) -> u64 {
    fp & ((1 << LOW_BITS) - 1)
}

/// The fingerprint is already a SipHash output: hash it again for nothing.
#[derive(Default)]
struct FpHasher(u64);

impl Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else so that the hasher stays total.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// (device, target) fingerprint → first row, at about 10 bytes per distinct row.
///
/// A `HashMap<u64, u64>` needs 17 bytes a slot in power-of-two tables at most 7/8 full that
/// double when full: a million rows took a 2^21-slot table (36 MiB), and while growing the
/// old table beside it, so `validate` peaked at 58 MB and `run` would have been over 60.
/// Here the bulk of the rows sit in an array of packed 10-byte entries sorted by
/// fingerprint, with a directory of buckets by the fingerprint's top 16 bits
/// (fingerprints are uniform over u64, so a bucket holds about n/65,536 entries, a cache
/// line or two up to a few million rows; a lookup costs about two cache misses, where a
/// plain binary or interpolation search costs four or more, and that dominated
/// `validate`'s time). Equality is still on all 64 bits. New rows go to a small hash map
/// first, which is sorted and merged into the array, back to front in place, when full.
/// Rows past u32::MAX (a file of over four billion rows) are kept whole in a map of their
/// own.
pub(super) struct Seen {
    sorted: Vec<Entry>,
    /// `directory[b]..directory[b + 1]` is the slice of `sorted` whose fingerprints' top
    /// bits are `b`. Empty until the first merge.
    directory: Vec<u32>,
    recent: HashMap<u64, u32, BuildHasherDefault<FpHasher>>,
    /// The merge buffer, kept between merges so that it is not reallocated each time.
    batch: Vec<(u64, u32)>,
    wide: HashMap<u64, u64>,
}

impl Default for Seen {
    fn default() -> Self {
        Self::with_recent_capacity(RECENT_START)
    }
}

impl Seen {
    fn with_recent_capacity(capacity: usize) -> Self {
        Self {
            sorted: Vec::new(),
            directory: Vec::new(),
            recent: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            batch: Vec::new(),
            wide: HashMap::new(),
        }
    }

    /// The first row seen with `fp`, or `None` after recording `row` as the first.
    pub(super) fn first_or_insert(&mut self, fp: u64, row: u64) -> Option<u64> {
        if let Some(&first) = self.recent.get(&fp) {
            return Some(u64::from(first));
        }
        if let Some(first) = self.find_sorted(fp) {
            return Some(u64::from(first));
        }
        if let Some(&first) = self.wide.get(&fp) {
            return Some(first);
        }
        match u32::try_from(row) {
            Ok(row) => {
                if self.recent.len() >= self.recent.capacity() {
                    self.merge();
                }
                self.recent.insert(fp, row);
            }
            Err(_) => {
                self.wide.insert(fp, row);
            }
        }
        None
    }

    /// Move the recent map into the sorted array.
    fn merge(&mut self) {
        if self.directory.is_empty() {
            self.directory = vec![0; BUCKETS + 1];
        }
        self.batch.clear();
        self.batch.extend(self.recent.drain());
        self.batch.sort_unstable_by_key(|&(fp, _)| fp);
        let (n, m) = (self.sorted.len(), self.batch.len());
        // Exact growth: the merge below touches every entry anyway, and a doubled
        // capacity would only be address space (or, where realloc copies, a larger spike).
        self.sorted.reserve_exact(m);
        self.sorted.resize(n + m, Entry::default());
        // Merge from the back into the array's new tail: no second array of the whole.
        // Fingerprints are distinct (a repeat is answered, never inserted). `b` tracks the
        // bucket of old entry i - 1, which gives back its top bits.
        let (mut i, mut j, mut b) = (n, m, BUCKETS - 1);
        for k in (0..n + m).rev() {
            let take_old = i > 0 && {
                while self.directory[b] as usize > i - 1 {
                    b -= 1; // directory[0] == 0 <= i - 1: stops at bucket 0 at the latest
                }
                let old = ((b as u64) << LOW_BITS) | self.sorted[i - 1].key();
                j == 0 || old > self.batch[j - 1].0
            };
            if take_old {
                i -= 1;
                self.sorted[k] = self.sorted[i];
            } else {
                j -= 1;
                let (fp, row) = self.batch[j];
                self.sorted[k] = Entry::new(fp, row);
            }
            if j == 0 {
                break; // the rest of the old entries are already in place
            }
        }
        // Each bucket start moves up by the new entries in the buckets before it.
        let mut added = 0u32;
        let mut next = 0usize;
        for b in 0..=BUCKETS {
            while next < m && bucket(self.batch[next].0) < b {
                next += 1;
                added += 1;
            }
            self.directory[b] += added; // n + m <= u32::MAX: only rows that fit u32
        }
        if self.sorted.len() > SORTED_PER_RECENT * self.recent.capacity() {
            self.recent.reserve(self.recent.capacity() + 1);
        }
    }

    /// Look `fp` up in the sorted array: one read of the directory, then a binary search
    /// of its bucket. Fingerprints are SipHash outputs, so buckets stay small; a crafted
    /// file that piles rows into one bucket costs O(log n) per row, never O(n).
    fn find_sorted(&self, fp: u64) -> Option<u32> {
        let b = bucket(fp);
        let (&start, &end) = (self.directory.get(b)?, self.directory.get(b + 1)?);
        let slice = self.sorted.get(start as usize..end as usize)?;
        let i = slice.binary_search_by_key(&low(fp), |e| e.key()).ok()?;
        slice.get(i).map(|e| e.row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain map, across many merges and with skewed fingerprints too.
    #[test]
    fn agrees_with_a_hash_map() {
        for skew in 0..3 {
            let mut seen = Seen::with_recent_capacity(16);
            let mut reference: HashMap<u64, u64> = HashMap::new();
            let mut order = Vec::new();
            let mut rng = fastrand::Rng::with_seed(7);
            for row in 1..=20_000u64 {
                // One in five rows repeats an earlier fingerprint.
                let fp = if !order.is_empty() && rng.u8(..5) == 0 {
                    order[rng.usize(..order.len())]
                } else {
                    match skew {
                        // Uniform, as SipHash outputs are.
                        0 => rng.u64(..),
                        // All in one bucket.
                        1 => rng.u64(..1 << 20),
                        // Few low bits, many buckets: the top bits must come back
                        // right from the directory.
                        _ => (rng.u64(..) & !((1 << 48) - 1)) | rng.u64(..4),
                    }
                };
                let expected = reference.get(&fp).copied();
                if expected.is_none() {
                    reference.insert(fp, row);
                    order.push(fp);
                }
                assert_eq!(seen.first_or_insert(fp, row), expected, "row {row}");
            }
            // Every fingerprint still answers its first row after all the merges.
            for (&fp, &first) in &reference {
                assert_eq!(seen.first_or_insert(fp, u64::MAX), Some(first));
            }
        }
    }

    #[test]
    fn extreme_fingerprints_and_wide_rows() {
        let mut seen = Seen::with_recent_capacity(1);
        for (row, fp) in [0, u64::MAX, 1, u64::MAX - 1].into_iter().enumerate() {
            assert_eq!(seen.first_or_insert(fp, row as u64 + 1), None);
        }
        assert_eq!(seen.first_or_insert(u64::MAX, 9), Some(2));
        assert_eq!(seen.first_or_insert(0, 9), Some(1));
        let wide = u64::from(u32::MAX) + 5;
        assert_eq!(seen.first_or_insert(42, wide), None);
        assert_eq!(seen.first_or_insert(42, wide + 1), Some(wide));
    }
}
