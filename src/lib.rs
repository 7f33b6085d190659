//! autopilot-bulk: assign Windows Autopilot deployment profiles in bulk through Microsoft Graph,
//! as fast as Graph's throttling allows and never faster, without losing or duplicating a row.
//!
//! Library first: [`run()`](fn@run) is the whole bulk job, callable in-process (the tests do); the
//! binary is a thin shell around [`app::main`].
//!
//! # Layout
//!
//! In the order data flows through a run:
//!
//! - [`cli`] and [`config`]: the command line, validated into a [`config::Config`];
//!   [`tenants`]: a `--tenants` file, one resolved [`config::Tenant`] each.
//! - [`action`]: what a row does to its device ([`action::Work`]: assign, tag or group), and
//!   the requests each action sends and reads back with.
//! - `connect`: one tenant (or each of a tenants file) connected: its settings, budget and
//!   Graph client, the same way for every command.
//! - [`input`]: the input CSV, row by row, into jobs or invalid rows.
//! - [`lock`]: one run per results file.
//! - [`run`](mod@run): the run as stages: planning and resuming, a budget per tenant, serial
//!   numbers resolved to identity ids, what devices already hold (tags, group memberships), the
//!   reader and a queue per tenant, the workers with each row's state machine (group rows:
//!   twenty to a request), and the writer; `plan` (`run::preview`) answers per row from the
//!   same stages without a write.
//! - `budget`: what one Graph tenant lends the run: `auth` tokens, the `throttle` window
//!   and gate, a request quota, the `retry` policy and the circuit breaker. It alone decides
//!   pauses.
//! - [`graph`]: the typed Graph client and the classification of its answers.
//! - [`output`]: the results CSV, read back for `--resume`, and the journal of rows in flight.
//! - [`summary`] and `progress`: what the run did, live and at the end.
//! - [`status`](mod@status): after a run, whether its assignments landed: each device's status
//!   from the tenant's identity [`listing`], into a status CSV (once, or until all are assigned).
//! - [`profiles`](mod@profiles): which deployment profile the devices get: the tenant's
//!   profiles and their groups, and the profile-to-group assignment.
//! - [`preflight`](mod@preflight): before a run, whether the tenant, the app's permission and
//!   the assignment route will take it: a token's claims, one listing page and one GET on the
//!   route, no write.
//! - [`import`](mod@import): before a run, register devices by hardware hash (batched import,
//!   the records polled, one sync, the listing read until they appear), into an import CSV
//!   that `run` takes as input.
//! - [`undo`](mod@undo): after a run, put back every device it reports `created` (delete the
//!   assignment, restore the tag, remove the member), into an undo CSV.
//! - [`emulator`]: a local Graph stand-in for rehearsals and tests.
//! - [`app`]: the binary's body: logging, signals, exit codes.

pub mod action;
pub mod app;
mod auth;
mod budget;
pub mod cli;
pub mod codes;
pub mod config;
mod connect;
pub mod emulator;
pub mod graph;
mod halt;
pub mod import;
pub mod input;
#[cfg(test)]
mod jsonish;
pub mod listing;
pub mod lock;
mod notes;
pub mod output;
pub mod preflight;
pub mod profiles;
mod progress;
mod retry;
pub mod run;
pub mod status;
pub mod summary;
pub mod tenants;
mod throttle;
pub mod undo;

pub use preflight::preflight;
pub use run::run;
pub use status::status;
pub use summary::Summary;
