//! Planning a run, and all of resuming in one place: open the input, read back an earlier
//! results file, check that it belongs to this input, open the results writer and the journal,
//! decide per row whether it is skipped, done, or reconciled first, and tidy up when the run
//! completes.
//!
//! Nothing here sends a request, so every refusal is exit 2 with the results file untouched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use uuid::Uuid;

use super::RunError;
use super::resolve::normalize;
use crate::config::Config;
use crate::input::{Action, InputReader, Parsed};
use crate::lock::RunLock;
use crate::output::{
    Journal, OutputError, Prior, PriorResults, ResultsWriter, Started, Status, device_fingerprint,
    serial_fingerprint,
};

/// What the run works through.
pub struct Plan {
    pub reader: InputReader,
    /// What each tenant's rows still to do name, by tenant (`None`: the one tenant).
    pub wanted: HashMap<Option<String>, Wanted>,
    pub writer: ResultsWriter,
    pub journal: Arc<Journal>,
    pub resume: Resume,
    /// Data rows in the input, when already counted.
    pub rows: Option<u64>,
}

/// What one tenant's rows still to do name, to be read before the first write.
#[derive(Debug, Default)]
pub struct Wanted {
    /// Serial numbers (normalised): resolved to identity ids.
    pub serials: HashSet<String>,
    /// Each of `serials` as its first row wrote it (trimmed): what a lookup sends, since how
    /// Graph's `contains` treats case is not documented. Matching stays case-insensitive.
    pub spelled: HashMap<String, String>,
    /// With `--action tag` or `group`: device ids whose current tags or memberships are read.
    pub ids: HashSet<Uuid>,
    /// With `--action group`: the groups whose members are read.
    pub groups: HashSet<Uuid>,
}

/// What an earlier run left: its results per row and the rows it had started.
#[derive(Debug, Default)]
pub struct Resume {
    prior: HashMap<u64, Prior>,
    /// Rows the journal names, and their devices: a row that moved in an edited input is
    /// still recognised by its device.
    started: HashSet<u64>,
    started_devices: HashSet<Uuid>,
    retry_invalid: bool,
    /// The results file repeats rows (an earlier resume redid them): fold them at the end.
    has_repeats: bool,
    /// Until when a request of a row in flight at the stop may still land.
    may_land_until: Option<std::time::SystemTime>,
}

/// What to do with one input row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowPlan {
    /// An earlier run finished it, with this status: not reported again.
    Skip(Status),
    /// Do it. `reconcile`: an earlier run may have sent it (it started, or reported it failed),
    /// so look with a GET before any POST. `redo`: the results file reports it already.
    Do { reconcile: bool, redo: bool },
}

/// An earlier run finished this row: it is not done again.
fn finished(p: &Prior, retry_invalid: bool) -> bool {
    p.status.is_success() || (p.status == Status::Invalid && !retry_invalid)
}

impl Resume {
    fn new(prior: HashMap<u64, Prior>, started: Vec<Started>, config: &Config) -> Self {
        // Only rows the results do not report were in flight at the stop.
        let in_flight = || started.iter().filter(|s| !prior.contains_key(&s.row));
        let now = std::time::SystemTime::now();
        Self {
            may_land_until: crate::output::may_land_until(in_flight(), config.request_timeout, now),
            started_devices: in_flight().filter_map(|s| s.device).collect(),
            started: started.iter().map(|s| s.row).collect(),
            prior,
            retry_invalid: config.retry_invalid,
            has_repeats: false,
        }
    }

    /// Until when a request the stopped run had in flight may still land (see
    /// [`crate::output::may_land_until`]).
    pub fn may_land_until(&self) -> Option<std::time::SystemTime> {
        self.may_land_until
    }

    /// The journal names `device` as sent by an earlier run, at whatever row.
    pub fn started_device(&self, device: Uuid) -> bool {
        self.started_devices.contains(&device)
    }

    /// What to do with input row `row`, naming `device` (when it parsed).
    pub fn decide(&self, row: u64, device: Option<Uuid>) -> RowPlan {
        let earlier = self.prior.get(&row);
        match earlier {
            Some(p) if finished(p, self.retry_invalid) => RowPlan::Skip(p.status),
            Some(_) => RowPlan::Do {
                reconcile: true,
                redo: true,
            },
            None => RowPlan::Do {
                reconcile: self.started.contains(&row)
                    || device.is_some_and(|d| self.started_devices.contains(&d)),
                redo: false,
            },
        }
    }
}

/// Open everything the run needs. The input first: a file that is not a table fails before a
/// results file is created.
pub fn prepare(config: &Config) -> Result<Plan, RunError> {
    let reader = InputReader::open(&config.input, config.delimiter, config.defaults.clone())?;
    if !reader.unknown_columns().is_empty() {
        tracing::warn!(
            columns = %reader.unknown_columns().join(", "),
            "ignoring columns this run does not read"
        );
    }
    let journal_err = |source| RunError::Journal {
        path: Journal::path_for(&config.output),
        source,
    };
    if !(config.resume && config.output.exists()) {
        let writer = ResultsWriter::create(&config.output, config.overwrite || config.resume)?
            .for_action(config.defaults.action);
        // A journal left beside a missing results file names rows an earlier run may have
        // sent: they are read back before any POST. Only --overwrite starts from nothing.
        let (journal, started) =
            Journal::open(&config.output, config.overwrite).map_err(journal_err)?;
        if !started.is_empty() {
            tracing::warn!(
                rows = started.len(),
                "the journal names rows an earlier run may have sent; they are read back first"
            );
        }
        // Serial numbers need a first pass to learn which to resolve; it counts the rows too.
        let survey = if reader.has_serial_numbers()
            || config.defaults.action != Action::Assign
            || config.read_before_write
        {
            Some(survey(config, &PriorResults::default())?)
        } else {
            None
        };
        return Ok(Plan {
            reader,
            writer,
            journal: Arc::new(journal),
            resume: Resume::new(HashMap::new(), started, config),
            rows: survey.as_ref().map(|s| s.rows),
            wanted: survey.map(|s| s.wanted).unwrap_or_default(),
        });
    }
    let prior = resumable(config)?;
    let survey = survey(config, &prior)?;
    let writer = if prior.valid_len == 0 {
        ResultsWriter::create(&config.output, true)?
    } else {
        ResultsWriter::append(&config.output, prior.valid_len, prior.columns)?
    }
    .for_action(config.defaults.action);
    let (journal, started) = Journal::open(&config.output, false).map_err(journal_err)?;
    tracing::info!(
        done = prior.rows.len(),
        started_before = started.len(),
        "resuming {}",
        config.output.display()
    );
    let PriorResults {
        rows: prior_rows,
        has_repeats,
        ..
    } = prior;
    Ok(Plan {
        reader,
        writer,
        journal: Arc::new(journal),
        resume: Resume {
            has_repeats,
            ..Resume::new(prior_rows, started, config)
        },
        rows: Some(survey.rows),
        wanted: survey.wanted,
    })
}

/// The results file `--resume` continues, read back: refused when this run cannot continue it
/// (no tenant column with `--tenants`, another `--action`).
fn resumable(config: &Config) -> Result<PriorResults, RunError> {
    let prior = crate::output::read_prior(&config.output)?;
    if config.defaults.tenants.is_some() && prior.columns < crate::output::HEADER_V2 {
        return Err(RunError::Output(OutputError::Resume {
            path: config.output.clone(),
            reason: "it was written by an earlier version without the tenant column; finish \
                     it without --tenants, or start a new results file with -o"
                .into(),
        }));
    }
    let wanted = config.defaults.action.as_str();
    if let Some(earlier) = prior.action.as_deref().filter(|a| *a != wanted) {
        return Err(RunError::Output(OutputError::Resume {
            path: config.output.clone(),
            reason: format!(
                "it records a run with --action {}, not --action {wanted}: resume it with \
                 --action {0}, or start a new results file with -o",
                crate::output::printable(earlier)
            ),
        }));
    }
    Ok(prior)
}

/// What `prepare` refuses about the results file, checked without writing (`--dry-run`): an
/// existing one needs `--overwrite` or `--resume` (the same refusal as creating it), one to
/// resume must be one this run can continue, and a directory is no results file.
pub fn check_results_file(config: &Config) -> Result<(), RunError> {
    let path = &config.output;
    if path.is_dir() {
        return Err(RunError::Output(OutputError::Create {
            path: path.clone(),
            source: std::io::Error::other("it is a directory: name a file with -o"),
        }));
    }
    if config.resume && path.exists() {
        resumable(config).map(drop)
    } else if config.overwrite || config.resume || std::fs::symlink_metadata(path).is_err() {
        Ok(())
    } else {
        Err(RunError::Output(OutputError::Exists(path.clone())))
    }
}

/// What the input's rows name, by tenant, for a run that has no results file yet (`plan`).
pub fn wanted(config: &Config) -> Result<HashMap<Option<String>, Wanted>, RunError> {
    Ok(survey(config, &PriorResults::default())?.wanted)
}

/// Refuse a results, journal or lock path that is the input itself, however spelled (a
/// relative path, `..`, a symlink, a hard link): `--overwrite` would destroy the input, and
/// the run would read its own results back as rows.
pub fn check_paths(config: &Config) -> Result<(), RunError> {
    let Ok(input) = std::fs::canonicalize(&config.input) else {
        return Ok(()); // opening it reports the problem with the input
    };
    let input_id = file_id(&input);
    let candidates = [
        ("results file", config.output.clone()),
        ("journal", Journal::path_for(&config.output)),
        ("lock file", RunLock::path_for(&config.output)),
    ];
    for (what, path) in candidates {
        let same = canonical(&path).is_some_and(|p| p == input)
            || (input_id.is_some() && file_id(&path) == input_id);
        if same {
            return Err(RunError::Config(format!(
                "the {what} {} is the input file {}: choose another -o",
                path.display(),
                config.input.display()
            )));
        }
        // Refused before the results file is created; opening them refuses one planted later.
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(RunError::Config(format!(
                "the {what} {} is a symbolic link, which is not followed: remove it (nothing \
                 was sent)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// A path's canonical form, also for a file that does not exist yet (its directory's).
fn canonical(path: &std::path::Path) -> Option<std::path::PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Some(p);
    }
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    Some(std::fs::canonicalize(dir).ok()?.join(name))
}

#[cfg(unix)]
fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_path: &std::path::Path) -> Option<(u64, u64)> {
    None
}

/// What one pass over the input learned before the run.
struct Survey {
    rows: u64,
    wanted: HashMap<Option<String>, Wanted>,
}

/// One pass over the input: count its rows, collect the serial numbers of rows still to do,
/// and check that an earlier results file belongs to it (every row it reports is the same
/// device at the same row number, and it reports no row the input lacks).
fn survey(config: &Config, prior: &PriorResults) -> Result<Survey, RunError> {
    let mismatch = |reason: String| {
        RunError::Output(OutputError::Resume {
            path: config.output.clone(),
            reason: format!("it does not belong to {}: {reason}", config.input.display()),
        })
    };
    let reader = InputReader::open(&config.input, config.delimiter, config.defaults.clone())?;
    let mut survey = Survey {
        rows: 0,
        wanted: HashMap::new(),
    };
    for item in reader {
        let parsed = item?;
        let row = parsed.row();
        survey.rows = row;
        let earlier = prior.rows.get(&row);
        let to_do = !earlier.is_some_and(|p| finished(p, config.retry_invalid));
        if let Parsed::Job(job) = &parsed
            && to_do
        {
            let wanted = survey.wanted.entry(job.tenant.clone()).or_default();
            if let Some(serial) = job.device.serial() {
                let key = normalize(serial);
                wanted
                    .spelled
                    .entry(key.clone())
                    .or_insert_with(|| serial.trim().to_string());
                wanted.serials.insert(key);
            }
            if (job.work.action() != Action::Assign || config.read_before_write)
                && let Some(id) = job.device.id()
            {
                wanted.ids.insert(id);
            }
            if let Some(group) = job.work.group() {
                wanted.groups.insert(group);
            }
        }
        let Some(p) = earlier else { continue };
        if p.status == Status::Invalid && config.retry_invalid {
            continue; // redone as the input says now: a corrected device id is the point
        }
        if !same_device(&parsed, p) {
            return Err(mismatch(format!(
                "row {row} is {} in the input but another device in the results",
                describe(&parsed)
            )));
        }
    }
    if let Some(beyond) = prior
        .rows
        .keys()
        .copied()
        .filter(|&r| r > survey.rows)
        .min()
    {
        return Err(mismatch(format!(
            "the results report row {beyond}, the input has {} rows",
            survey.rows
        )));
    }
    Ok(survey)
}

/// Whether an input row names the device an earlier results line reported: by id when the
/// row gives one, else by serial number.
fn same_device(parsed: &Parsed, p: &Prior) -> bool {
    match parsed {
        Parsed::Job(job) => match job.device.id() {
            Some(id) => device_fingerprint(&id.to_string()) == p.device,
            None => serial_fingerprint(job.device.serial().unwrap_or_default()) == p.serial,
        },
        Parsed::Invalid(i) => device_fingerprint(&i.device_id) == p.device,
    }
}

fn describe(parsed: &Parsed) -> String {
    match parsed {
        Parsed::Job(job) => match job.device.id() {
            Some(id) => format!("device \"{id}\""),
            None => format!("serial {:?}", job.device.serial().unwrap_or_default()),
        },
        Parsed::Invalid(i) => format!("device {:?}", i.device_id),
    }
}

/// The run completed (every input row has its line): fold rows a resume redid into one line
/// each (the new file locked by `lock` before it replaces the old), then the journal has
/// served its purpose.
pub fn complete(
    config: &Config,
    resume: &Resume,
    redone: u64,
    journal: &Journal,
    lock: &mut RunLock,
) -> Result<(), RunError> {
    if resume.has_repeats || redone > 0 {
        crate::output::compact(&config.output, |tmp| lock.install_results(tmp))?;
    }
    journal.remove().map_err(|source| RunError::Journal {
        path: Journal::path_for(&config.output),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Resume {
        fn decide_row(&self, row: u64) -> RowPlan {
            self.decide(row, None)
        }
    }

    #[test]
    fn a_row_that_moved_is_known_by_its_device() {
        let moved = Uuid::from_u64_pair(9, 9);
        let started = vec![Started {
            row: 4,
            device: Some(moved),
            sent: None,
        }];
        let resume = Resume::new(HashMap::new(), started, &Config::new("i", "o"));
        // A row inserted above it: the device is now row 5, row 4 is another device.
        let reconcile = RowPlan::Do {
            reconcile: true,
            redo: false,
        };
        assert_eq!(resume.decide(5, Some(moved)), reconcile);
        assert_eq!(resume.decide(4, Some(Uuid::nil())), reconcile);
        assert_eq!(
            resume.decide(6, Some(Uuid::nil())),
            RowPlan::Do {
                reconcile: false,
                redo: false
            }
        );
    }

    fn prior(status: Status) -> Prior {
        Prior {
            device: 0,
            serial: 0,
            status,
        }
    }

    #[test]
    fn finished_rows_are_skipped_failed_and_started_ones_reconciled() {
        let moved = Uuid::from_u64_pair(9, 9);
        let resume = Resume {
            prior: HashMap::from([
                (1, prior(Status::Created)),
                (2, prior(Status::Existing)),
                (3, prior(Status::Failed)),
                (4, prior(Status::Invalid)),
            ]),
            started: HashSet::from([5]),
            started_devices: HashSet::from([moved]),
            retry_invalid: false,
            has_repeats: false,
            may_land_until: None,
        };
        assert_eq!(resume.decide_row(1), RowPlan::Skip(Status::Created));
        assert_eq!(resume.decide_row(2), RowPlan::Skip(Status::Existing));
        let redo = RowPlan::Do {
            reconcile: true,
            redo: true,
        };
        assert_eq!(resume.decide_row(3), redo);
        assert_eq!(resume.decide_row(4), RowPlan::Skip(Status::Invalid));
        assert_eq!(
            resume.decide_row(5),
            RowPlan::Do {
                reconcile: true,
                redo: false
            }
        );
        assert_eq!(
            resume.decide_row(6),
            RowPlan::Do {
                reconcile: false,
                redo: false
            }
        );
        let retry_invalid = Resume {
            retry_invalid: true,
            ..resume
        };
        assert_eq!(retry_invalid.decide_row(4), redo);
    }
}
