//! The intent journal: which rows may have reached the service, synced before their first
//! request goes out. Each line names the row, its device and when it was written
//! (`12 0f8fad5b-… 1764633600123`, Unix milliseconds), so that a row that moved (an edited
//! input) is still known by its device, and a resume knows how recently a request may have
//! left.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use uuid::Uuid;

/// A row the journal names: its number and, in journals that record it, its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Started {
    pub row: u64,
    pub device: Option<Uuid>,
    /// When the line was written, just before the row's request left (journals of earlier
    /// versions have none).
    pub sent: Option<SystemTime>,
}

impl Started {
    /// `row`, `row device` or `row device millis`; anything else (a torn last line) is
    /// skipped.
    fn parse(line: &str) -> Option<Started> {
        let mut parts = line.split_whitespace();
        let row = parts.next()?.parse().ok()?;
        let device = parts.next().and_then(|d| Uuid::parse_str(d).ok());
        let sent = parts
            .next()
            .and_then(|m| m.parse::<u64>().ok())
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        Some(Started { row, device, sent })
    }
}

/// The line a run that stopped in order, every request answered, ends its journal with.
const SETTLED: &str = "settled";
/// The start of a line keeping a 429's "come back at" (`gate 1764633600123`).
const GATE: &str = "gate ";

/// Until when a request of `rows` (journal lines of a stopped run that no result reports) may
/// still reach the service: the last one's sending plus `timeout`, the longest a request is
/// worked on. Reading back before then can miss a write that lands after the read. `None`
/// when that time is past (or no line says when it was sent).
pub fn may_land_until<'a>(
    rows: impl IntoIterator<Item = &'a Started>,
    timeout: Duration,
    now: SystemTime,
) -> Option<SystemTime> {
    let last = rows.into_iter().filter_map(|s| s.sent).max()?;
    let until = last + timeout;
    (until > now).then_some(until)
}

/// The intent journal beside the results file: the rows whose first request may have reached
/// the service. Written and synced before that request is sent, so that after a crash (even
/// `kill -9` or a power cut) `--resume` knows which unfinished rows to reconcile with a GET
/// instead of POSTing blindly. Removed when a run completes.
pub struct Journal {
    path: PathBuf,
    file: Arc<std::sync::Mutex<File>>,
    group: std::sync::Mutex<Group>,
    synced: tokio::sync::Notify,
    /// Sync rounds performed: what tells group commit apart from one sync per row.
    syncs: AtomicU64,
    /// The latest "come back at" a stopped run was told (a 429's Retry-After), as its
    /// journal kept it: a resume honours it before its first request.
    come_back_at: Option<SystemTime>,
    /// Test hook: every sync round takes this lock before writing, so a test can hold a round
    /// in flight while more rows arrive.
    #[cfg(test)]
    hold: tokio::sync::Mutex<()>,
}

/// Group commit: rows that ask to be recorded while a sync is under way are written and synced
/// together by the next one, so a burst of rows costs one `fdatasync`, not one each.
#[derive(Debug, Default)]
struct Group {
    pending: Vec<(u64, Uuid)>,
    /// Generation the rows in `pending` will be synced as.
    next: u64,
    /// Highest generation on disk.
    done: u64,
    syncing: bool,
    /// A failed sync: every row that waited for it gets the error.
    failed: Option<(u64, String)>,
}

/// `e` (the journal at `path` cannot be opened or read) with what to do about it: the run
/// cannot know which rows may already have been sent, and says what going on without it costs.
fn unreadable(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!(
            "{e}. It names the rows a stopped run may have sent, to be read back before they \
             are sent again. To continue, move it aside (mv '{0}' '{0}.unreadable') and run \
             again with --resume: rows in flight when that run stopped are then sent again \
             without being read back, so one may be applied twice; nothing was sent",
            path.display()
        ),
    )
}

impl Journal {
    pub fn path_for(results: &Path) -> PathBuf {
        let mut name = results.as_os_str().to_owned();
        name.push(".journal");
        PathBuf::from(name)
    }

    /// Open the journal for `results`, returning the rows it already names. `fresh` empties it.
    pub fn open(results: &Path, fresh: bool) -> std::io::Result<(Journal, Vec<Started>)> {
        let path = Self::path_for(results);
        let mut rows = Vec::new();
        let mut come_back_at = None;
        let mut options = OpenOptions::new();
        options.read(true).create(true).append(true).truncate(false);
        // Read through the handle: a symbolic link planted here is refused, never followed.
        let mut file = crate::lock::open_no_follow(&options, &path).map_err(|e| {
            // A planted link's refusal says what to do already.
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                e
            } else {
                unreadable(&path, e)
            }
        })?;
        if !fresh {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut file, &mut text)
                .map_err(|e| unreadable(&path, e))?;
            for line in text.lines() {
                if let Some(ms) = line.strip_prefix(GATE).and_then(|m| m.trim().parse().ok()) {
                    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
                    come_back_at = come_back_at.max(Some(at));
                } else if line.starts_with(SETTLED) {
                    // Everything sent before it was answered: nothing of it can land later.
                    rows.iter_mut().for_each(|s: &mut Started| s.sent = None);
                } else {
                    rows.extend(Started::parse(line));
                }
            }
        }
        if fresh {
            file.set_len(0)?;
        }
        Ok((
            Journal {
                path,
                file: Arc::new(std::sync::Mutex::new(file)),
                group: std::sync::Mutex::new(Group {
                    next: 1,
                    ..Group::default()
                }),
                synced: tokio::sync::Notify::new(),
                syncs: AtomicU64::new(0),
                come_back_at,
                #[cfg(test)]
                hold: tokio::sync::Mutex::new(()),
            },
            rows,
        ))
    }

    fn group(&self) -> std::sync::MutexGuard<'_, Group> {
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record that `row` (for `device`) is about to be sent, durably: returns once the row is
    /// synced to disk. The first caller syncs everything pending; callers arriving meanwhile are
    /// synced by the next round together.
    pub async fn record(&self, row: u64, device: Uuid) -> std::io::Result<()> {
        let generation = {
            let mut g = self.group();
            g.pending.push((row, device));
            g.next
        };
        loop {
            let notified = self.synced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = {
                let mut g = self.group();
                if let Some((failed, e)) = &g.failed
                    && *failed >= generation
                {
                    return Err(std::io::Error::other(e.clone()));
                }
                if g.done >= generation {
                    return Ok(());
                }
                if g.syncing {
                    None
                } else {
                    g.syncing = true;
                    let taken = g.next;
                    g.next += 1;
                    Some((std::mem::take(&mut g.pending), taken))
                }
            };
            let Some((rows, taken)) = batch else {
                notified.await;
                continue;
            };
            // A row abandoned mid-sync (a tenant stopped, the grace period ran out) must not
            // leave the round marked as running: the others would wait on it for ever.
            let round = Round {
                journal: self,
                rows: Some(rows.clone()),
            };
            let written = self.sync(rows).await;
            round.finish();
            {
                let mut g = self.group();
                g.syncing = false;
                match &written {
                    Ok(()) => g.done = taken,
                    Err(e) => g.failed = Some((taken, e.to_string())),
                }
            }
            self.synced.notify_waiters();
        }
    }
}

/// A sync round under way. Dropped before [`Round::finish`] (its caller was cancelled), it
/// hands its rows back to the next round and lets that round start.
struct Round<'a> {
    journal: &'a Journal,
    rows: Option<Vec<(u64, Uuid)>>,
}

impl Round<'_> {
    fn finish(mut self) {
        self.rows = None;
    }
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        let Some(rows) = self.rows.take() else {
            return;
        };
        {
            let mut g = self.journal.group();
            g.syncing = false;
            // Written again by the next round: a journal line twice is harmless.
            g.pending.extend(rows);
        }
        self.journal.synced.notify_waiters();
    }
}

impl Journal {
    /// One round: append `rows` and sync them, off the async threads.
    async fn sync(&self, rows: Vec<(u64, Uuid)>) -> std::io::Result<()> {
        #[cfg(test)]
        let _held = self.hold.lock().await;
        let file = self.file.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            let mut text = String::with_capacity(rows.len() * 64);
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            for (row, device) in rows {
                text.push_str(&format!("{row} {device} {now}\n"));
            }
            f.write_all(text.as_bytes())?;
            f.sync_data()
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        self.syncs.fetch_add(1, Ordering::Relaxed);
        written
    }

    /// Sync rounds performed so far.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Keep the service's "come back at" (`until`), so that a run killed while it waits is
    /// resumed no sooner. Not synced: the page cache outlives a killed process, and a lost
    /// line costs one early request, not a duplicate.
    pub fn keep_gate(&self, until: SystemTime) {
        let ms = until
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(format!("{GATE}{ms}\n").as_bytes()) {
            tracing::warn!("cannot keep the service's Retry-After in the journal: {e}");
        }
    }

    /// The latest "come back at" the journal kept when it was opened, if still ahead.
    pub fn come_back_at(&self) -> Option<SystemTime> {
        self.come_back_at.filter(|at| *at > SystemTime::now())
    }

    /// The run stopped in order with every request answered: no row named so far can still
    /// land, so a resume need not wait before reading back. Appended and synced.
    pub fn settled(&self) -> std::io::Result<()> {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(format!("{SETTLED}\n").as_bytes())?;
        f.sync_data()
    }

    /// The run completed: every row has its line; the journal has served its purpose.
    pub fn remove(&self) -> std::io::Result<()> {
        std::fs::remove_file(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn journal_remembers_rows_across_opens_and_concurrent_records() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.csv");
        let (j, rows) = Journal::open(&results, true).unwrap();
        assert!(rows.is_empty());
        j.record(3, dev(3)).await.unwrap();
        j.record(7, dev(7)).await.unwrap();
        let j = Arc::new(j);
        let many: Vec<_> = (100..150)
            .map(|r| {
                let j = j.clone();
                tokio::spawn(async move { j.record(r, dev(r)).await })
            })
            .collect();
        for t in many {
            t.await.unwrap().unwrap();
        }
        let Ok(j) = Arc::try_unwrap(j) else {
            panic!("journal still shared")
        };
        let (_, mut started) = Journal::open(&results, false).unwrap();
        started.sort_unstable();
        assert!(started.iter().all(|s| s.device == Some(dev(s.row))));
        let rows: Vec<u64> = started.iter().map(|s| s.row).collect();
        assert_eq!(rows.len(), 52);
        assert_eq!(&rows[..2], &[3, 7]);
        assert_eq!(rows[2..], (100..150).collect::<Vec<_>>());
        j.remove().unwrap();
        assert!(!Journal::path_for(&results).exists());
    }

    /// A fresh journal for `r.csv` in a temporary folder.
    fn journal() -> (tempfile::TempDir, Arc<Journal>) {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("r.csv"), true).unwrap();
        (dir, Arc::new(j))
    }

    /// Record `row` on a task of its own.
    fn record(j: &Arc<Journal>, row: u64) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let j = j.clone();
        tokio::spawn(async move { j.record(row, dev(row)).await })
    }

    /// A row abandoned while its round syncs (its tenant stopped, the grace period ran out)
    /// must not leave the others waiting on a round nobody finishes: its rows go to the next
    /// round, which the waiting rows run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_abandoned_mid_sync_is_taken_over() {
        let (dir, j) = journal();
        let results = dir.path().join("r.csv");
        let held = j.hold.lock().await;
        let record = |row: u64| record(&j, row);
        let first = record(0);
        until(|| j.group().syncing).await;
        let waiting = record(1);
        until(|| j.group().pending.len() == 1).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        drop(held);
        waiting.await.unwrap().unwrap();
        let (_, started) = Journal::open(&results, false).unwrap();
        let rows: HashSet<u64> = started.iter().map(|s| s.row).collect();
        assert_eq!(rows, HashSet::from([0, 1]));
    }

    /// Rows that ask while a sync is in flight share the next one: 50 rows, two syncs. The
    /// first round is held at the hook until the other 49 rows are all waiting, so grouping
    /// must happen however the threads are scheduled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_arriving_during_a_sync_share_the_next_one() {
        let (dir, j) = journal();
        let results = dir.path().join("r.csv");
        let held = j.hold.lock().await;
        let record = |row: u64| record(&j, row);
        let first = record(0);
        until(|| j.group().syncing).await;
        let rest: Vec<_> = (1..50).map(record).collect();
        until(|| j.group().pending.len() == 49).await;
        assert_eq!(j.syncs(), 0, "the first round is still held");
        drop(held);
        first.await.unwrap().unwrap();
        for t in rest {
            t.await.unwrap().unwrap();
        }
        assert_eq!(j.syncs(), 2);
        let (_, started) = Journal::open(&results, false).unwrap();
        let mut rows: Vec<u64> = started.iter().map(|s| s.row).collect();
        rows.sort_unstable();
        assert_eq!(rows, (0..50).collect::<Vec<_>>());
    }

    fn dev(row: u64) -> Uuid {
        Uuid::from_u64_pair(row, 1)
    }

    #[test]
    fn old_journals_of_row_numbers_still_read() {
        assert_eq!(
            Started::parse("12"),
            Some(Started {
                row: 12,
                device: None,
                sent: None,
            })
        );
        let d = dev(5);
        assert_eq!(
            Started::parse(&format!("5 {d}")),
            Some(Started {
                row: 5,
                device: Some(d),
                sent: None,
            })
        );
        assert_eq!(Started::parse("torn 1"), None);
    }

    #[tokio::test]
    async fn a_line_says_when_it_was_sent_and_a_resume_knows_until_when_it_may_land() {
        let (dir, j) = journal();
        let before = SystemTime::now() - Duration::from_millis(1);
        j.record(1, dev(1)).await.unwrap();
        let (_, started) = Journal::open(&dir.path().join("r.csv"), false).unwrap();
        let sent = started[0].sent.expect("the line says when");
        assert!(sent >= before && sent <= SystemTime::now(), "{sent:?}");
        let timeout = Duration::from_secs(100);
        let until = may_land_until(&started, timeout, SystemTime::now());
        assert_eq!(until, Some(sent + timeout));
        // Long after: nothing can land any more; an old journal without times never waits.
        assert_eq!(may_land_until(&started, timeout, sent + timeout * 2), None);
        let old = [Started::parse("3").unwrap()];
        assert_eq!(may_land_until(&old, timeout, SystemTime::now()), None);
        // A 429's "come back at" is kept and read back; a past one is no wait.
        let ahead = SystemTime::now() + Duration::from_secs(30);
        j.keep_gate(SystemTime::now() - Duration::from_secs(1));
        j.keep_gate(ahead);
        let (reopened, started) = Journal::open(&dir.path().join("r.csv"), false).unwrap();
        assert_eq!(started.len(), 1, "a gate line is no row");
        let kept = reopened.come_back_at().expect("kept");
        assert!(kept.duration_since(ahead).unwrap_or_default() < Duration::from_millis(1));
        // A run that stopped with every request answered says so: nothing before can land.
        j.settled().unwrap();
        j.record(2, dev(2)).await.unwrap();
        let (_, started) = Journal::open(&dir.path().join("r.csv"), false).unwrap();
        assert_eq!(started.len(), 2);
        assert_eq!((started[0].sent, started[1].sent.is_some()), (None, true));
    }

    /// Yield until `done` holds; the tasks it waits on run on the runtime's worker threads.
    async fn until(done: impl Fn() -> bool) {
        while !done() {
            tokio::task::yield_now().await;
        }
    }
}
