//! Microsoft Graph: the wire model and the client that turns one request into one outcome.

pub mod client;
pub mod model;
