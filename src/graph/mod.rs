//! Microsoft Graph: the wire model, the typed client, and the classification of its answers.

pub mod answer;
mod batch;
pub mod client;
pub mod model;
pub(crate) mod request;

pub use batch::MAX_BATCH;
