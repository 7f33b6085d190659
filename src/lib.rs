//! autopilot-bulk: assign Windows Autopilot deployment profiles in bulk through Microsoft Graph,
//! as fast as Graph's throttling allows and never faster, without losing or duplicating a row.
//!
//! Library first: [`pipeline::run`] is the whole bulk job, callable in-process (tests do);
//! the binary is a thin shell around it.

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod emulator;
pub mod graph;
pub mod input;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod retry;
pub mod throttle;
