//! One run per results file: an exclusive OS advisory lock (`flock`) on `<results>.lock`, taken
//! before anything is read or sent and held to the end of the run.
//!
//! Exactly-once must hold across processes too: two runs on one results file (a cron job that
//! overran its slot, a timer plus a manual run) would dispatch the same rows. The kernel drops
//! the lock when its holder dies, `kill -9` included, so a stale lock file never blocks a later
//! run. The file carries who holds it (pid, host, start time, command) so that a refusal can
//! say so. Advisory locks on network file systems (NFS, SMB) are only as good as the server's
//! lock support: keep results files on a local disk.
//!
//! The lock file is a name anyone who can write the folder can remove: a second run would then
//! create a new one and lock that. So once the results file exists the run locks it too
//! ([`RunLock::cover_results`]), and a run refuses a results file another one holds. Nothing
//! is opened through a symbolic link (a link planted at the lock path would have its target
//! truncated), and a folder any user can write to without the sticky bit is refused (anyone
//! could swap these files).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fs4::FileExt;

/// The results file is in use, or its lock cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{results} is in use by another autopilot-bulk run ({holder}): wait for it to finish \
         or stop it, then run again (add --resume to continue its results); nothing was sent \
         and nothing changed (lock: {lock})",
        results = results.display(),
        lock = lock.display()
    )]
    Held {
        results: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    /// A run started before this one holds the results file itself; its lock file was
    /// removed while it ran.
    #[error(
        "{} is in use by another autopilot-bulk run (it holds the results file; its lock file \
         was removed while it ran): wait for it to finish or stop it; nothing was sent and \
         nothing changed",
        results.display()
    )]
    ResultsHeld { results: PathBuf },
    #[error(
        "the results folder {} is writable by every user and not sticky: another user could \
         plant or swap the results, lock and journal files; use a folder only you can write \
         to (nothing was sent)",
        folder.display()
    )]
    UnsafeFolder { folder: PathBuf },
    #[error(
        "the results folder {} does not exist (or is not a folder): create it, or give -o a \
         path in a folder that exists (nothing was sent)",
        folder.display()
    )]
    NoFolder { folder: PathBuf },
    #[error("cannot lock {}: {source}", lock.display())]
    Io {
        lock: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock. Dropping it removes the lock file and releases the lock.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    path: PathBuf,
    results: PathBuf,
    /// The results file, locked as well once it exists (unix: elsewhere a lock would also
    /// refuse this process's own writes through another handle).
    covered: Option<File>,
}

impl RunLock {
    pub fn path_for(results: &Path) -> PathBuf {
        let mut name = results.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Take the lock of `results` without waiting, recording `command` as its holder; the
    /// results file, if it exists already, is locked too.
    pub fn acquire(results: &Path, command: &str) -> Result<RunLock, LockError> {
        check_folder(results)?;
        let (file, path) = Self::lock_file(results, command)?;
        let mut lock = RunLock {
            file,
            path,
            results: results.to_path_buf(),
            covered: None,
        };
        lock.cover_results()?;
        Ok(lock)
    }

    /// Lock the results file itself, once it exists (call again after creating it): from
    /// then on, removing the lock file cannot admit a second run.
    pub fn cover_results(&mut self) -> Result<(), LockError> {
        if cfg!(not(unix)) || self.covered.is_some() {
            return Ok(());
        }
        let io = |source| LockError::Io {
            lock: self.results.clone(),
            source,
        };
        // Only a regular file: opening a FIFO would block (the writer reports what it is). A
        // symbolic link is refused by the open, never followed.
        match std::fs::symlink_metadata(&self.results) {
            Ok(m) if m.is_file() || m.file_type().is_symlink() => {}
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        let file = open_no_follow(OpenOptions::new().read(true), &self.results).map_err(io)?;
        match FileExt::try_lock(&file) {
            Ok(()) => {
                self.covered = Some(file);
                Ok(())
            }
            Err(fs4::TryLockError::WouldBlock) => Err(LockError::ResultsHeld {
                results: self.results.clone(),
            }),
            Err(fs4::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Put `replacement` (a compacted results file this run wrote) in place of the results
    /// file, locked before it gets there. Renaming over the results file would otherwise leave
    /// the run's lock on the old file, which nothing names any more: with the lock file
    /// removed, a second run would find the new results file unlocked and start beside this
    /// one. The lock file's own lock is on another path and unaffected.
    pub fn install_results(&mut self, replacement: &Path) -> std::io::Result<()> {
        let file = open_no_follow(OpenOptions::new().read(true), replacement)?;
        if cfg!(unix) {
            FileExt::try_lock(&file).map_err(|e| match e {
                fs4::TryLockError::WouldBlock => std::io::Error::other(format!(
                    "{} is locked by another process",
                    replacement.display()
                )),
                fs4::TryLockError::Error(e) => e,
            })?;
        }
        std::fs::rename(replacement, &self.results)?;
        // The old file goes (and its lock with it) only now that the new one is held.
        if cfg!(unix) {
            self.covered = Some(file);
        }
        Ok(())
    }

    /// Open and lock `<results>.lock`, never through a symbolic link, and make sure the lock
    /// is on the file the path names (a releasing holder removes it).
    fn lock_file(results: &Path, command: &str) -> Result<(File, PathBuf), LockError> {
        let path = Self::path_for(results);
        let io = |source| LockError::Io {
            lock: path.clone(),
            source,
        };
        loop {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            let mut file = open_no_follow(&options, &path).map_err(io)?;
            match FileExt::try_lock(&file) {
                Ok(()) => {}
                Err(fs4::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    return Err(LockError::Held {
                        results: results.to_path_buf(),
                        lock: path.clone(),
                        holder: describe(&holder),
                    });
                }
                Err(fs4::TryLockError::Error(e)) => return Err(io(e)),
            }
            // A holder that was releasing removed the file after we opened it: our lock is on
            // a file nobody else will open. Take the lock again on the file at the path.
            if !same_file(&file, &path) {
                continue;
            }
            file.set_len(0).map_err(io)?;
            file.rewind().map_err(io)?;
            file.write_all(holder_record(command).as_bytes())
                .map_err(io)?;
            return Ok((file, path));
        }
    }
}

/// Open `path` with `options`, refusing a symbolic link there: a link planted at a path the
/// run writes would have it write (or truncate) whatever the link points to.
pub(crate) fn open_no_follow(options: &OpenOptions, path: &Path) -> std::io::Result<File> {
    let link = || {
        std::io::Error::other(
            "it is a symbolic link, which is not followed: remove it (nothing was sent)",
        )
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(link());
    }
    // Unix closes the window between the check above and the open with O_NOFOLLOW; Windows
    // has no such flag for files, and creating a symbolic link there takes a privilege (or
    // developer mode) a planting user rarely has: the check above is what it gets.
    #[cfg(unix)]
    let options = {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = options.clone();
        options.custom_flags(libc::O_NOFOLLOW);
        options
    };
    let opened = options.open(path);
    #[cfg(unix)]
    let opened = opened.map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            return link();
        }
        e
    });
    opened
}

/// Refuse a results folder that does not exist (named as such: the lock file is only the
/// first file the run would create there), and one every user may write to without the sticky
/// bit (unix): anyone could remove and replace the files the run locks, writes and reads back.
fn check_folder(results: &Path) -> Result<(), LockError> {
    let folder = match results.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let metadata = match std::fs::metadata(folder) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Err(missing(folder)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing(folder)),
        // Another reason (permissions): opening the lock file reports it.
        Err(_) => return Ok(()),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode();
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(LockError::UnsafeFolder {
                folder: folder.to_path_buf(),
            });
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    Ok(())
}

fn missing(folder: &Path) -> LockError {
    LockError::NoFolder {
        folder: folder.to_path_buf(),
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so that a waiting opener notices (see `acquire`).
        let _ = std::fs::remove_file(&self.path);
        let _ = FileExt::unlock(&self.file);
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// `pid=…`, `host=…`, `started=…`, `command=…` lines.
fn holder_record(command: &str) -> String {
    format!(
        "pid={}\nhost={}\nstarted={}\ncommand={}\n",
        std::process::id(),
        gethostname::gethostname().to_string_lossy(),
        humantime::format_rfc3339_seconds(SystemTime::now()),
        command.replace('\n', " ")
    )
}

/// The holder in one line, from what it recorded.
fn describe(record: &str) -> String {
    let field = |name: &str| {
        record.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.chars().take(300).collect::<String>())
        })
    };
    match (field("pid"), field("host")) {
        (Some(pid), Some(host)) => format!(
            "pid {pid} on {host}, started {}, command: {}",
            field("started").unwrap_or_else(|| "at an unknown time".into()),
            field("command").unwrap_or_default()
        ),
        _ => "holder unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_results_file_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.csv");
        let held = RunLock::acquire(&results, "autopilot-bulk run in.csv").unwrap();
        let err = RunLock::acquire(&results, "second").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(
            text.contains("command: autopilot-bulk run in.csv"),
            "{text}"
        );
        drop(held);
        assert!(
            !RunLock::path_for(&results).exists(),
            "released lock file left behind"
        );
        RunLock::acquire(&results, "third").expect("free again after release");
    }

    #[test]
    fn a_lock_file_without_a_live_holder_does_not_block() {
        // What `kill -9` leaves: the file with its record, and no lock (the kernel dropped it).
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.csv");
        std::fs::write(
            RunLock::path_for(&results),
            "pid=999999\nhost=gone\nstarted=2026-01-01T00:00:00Z\ncommand=old\n",
        )
        .unwrap();
        let lock = RunLock::acquire(&results, "new run").expect("a dead holder's file is free");
        let record = std::fs::read_to_string(RunLock::path_for(&results)).unwrap();
        assert!(record.contains("command=new run"), "{record}");
        drop(lock);
    }

    #[cfg(unix)]
    #[test]
    fn a_removed_lock_file_does_not_admit_a_second_lock_once_the_results_exist() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.csv");
        let mut held = RunLock::acquire(&results, "first").unwrap();
        std::fs::write(&results, "header\n").unwrap();
        held.cover_results().unwrap();
        std::fs::remove_file(RunLock::path_for(&results)).unwrap();
        let err = RunLock::acquire(&results, "second").unwrap_err();
        assert!(matches!(err, LockError::ResultsHeld { .. }), "{err}");
        drop(held);
        RunLock::acquire(&results, "third").expect("free after the first ends");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_lock_or_journal_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.csv");
        let target = dir.path().join("precious");
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, RunLock::path_for(&results)).unwrap();
        let err = RunLock::acquire(&results, "run").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let journal = crate::output::Journal::path_for(&results);
        std::os::unix::fs::symlink(&target, &journal).unwrap();
        let err = crate::output::Journal::open(&results, true).err().unwrap();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

    /// A results file with row 1 twice (a resume redid it): what compaction folds.
    fn results_with_a_repeat(results: &Path) {
        use crate::output::{ResultsWriter, RowResult};
        let mut w = ResultsWriter::create(results, false).unwrap();
        for (row, why) in [(1, "first"), (2, "only"), (1, "second")] {
            w.write(&RowResult::invalid(row, "d".into(), why.into()))
                .unwrap();
        }
    }

    /// Compaction renames a new file over the results file at the end of a run: the run must
    /// hold the new file too. Without that, removing the lock file then admits a second run
    /// while the first still finishes; and the lock file's own lock still refuses one.
    #[cfg(unix)]
    #[test]
    fn compaction_keeps_the_results_file_locked_and_follows_no_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("r.csv");
        let mut held = RunLock::acquire(&results, "first").unwrap();
        results_with_a_repeat(&results);
        held.cover_results().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "precious\n").unwrap();
        let tmp = crate::output::compacting_path(&results);
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        crate::output::compact(&results, |tmp| held.install_results(tmp)).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert!(!tmp.exists(), "the compacted file was renamed into place");
        let text = std::fs::read_to_string(&results).unwrap();
        assert!(text.contains("second") && !text.contains("first"), "{text}");
        let err = RunLock::acquire(&results, "second").unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        std::fs::remove_file(RunLock::path_for(&results)).unwrap();
        let err = RunLock::acquire(&results, "third").unwrap_err();
        assert!(matches!(err, LockError::ResultsHeld { .. }), "{err}");
        drop(held);
        RunLock::acquire(&results, "fourth").expect("free after the first ends");
    }

    #[test]
    fn an_unreadable_record_still_refuses() {
        assert_eq!(describe("garbage"), "holder unknown");
        assert!(describe("pid=1\nhost=h\n").starts_with("pid 1 on h"));
    }
}
