//! The integration tests, one binary: each module drives the crate (or its binary) end to
//! end, mostly against the in-process emulator on port 0. One binary links the crate once.

mod common;

mod actions;
mod auth;
mod batch;
mod cli;
mod credential_files;
mod deploy;
mod dry_run;
mod emulator;
mod emulator_directory;
mod emulator_import;
mod emulator_outage;
mod emulator_tenants;
mod faults;
mod first_hour;
mod group;
mod help;
mod hostile_input;
mod hostile_servers;
mod import;
mod nightly;
mod outage;
mod plan;
// Symbolic links, permission bits and flock semantics: unix only.
#[cfg(unix)]
mod planted_files;
mod preflight;
mod properties;
mod resume;
mod row_targets;
mod run;
mod run_safety;
mod screen;
mod serials;
mod status;
mod status_tenants;
mod tag;
mod tenants;
mod tenants_file;
mod undo;
