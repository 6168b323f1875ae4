//! The call runtime: what happens to a provider stream between the socket
//! and the domains. The session registry ([`registry`]), the per-call actor
//! ([`session`]: call row, call log, media session, sinks, drain), sink
//! policy and live-caption admission ([`sinks`], [`recording`],
//! [`transcription`]), quotas enforced where work starts ([`quota`]) and
//! the credential cache that authenticates streams ([`twilio_auth`]).
//!
//! Knows no HTTP: `api/` turns a WebSocket into a `Stream`/`Sink` of
//! [`session::Inbound`]/[`session::OutFrame`] and hands it to
//! [`session::run_session`], so everything here can be driven without a
//! socket.

mod call_log;
pub mod config;
pub mod quota;
pub mod recording;
pub mod registry;
pub mod session;
pub mod sinks;
pub mod transcription;
pub mod twilio_auth;

use std::sync::Arc;

pub use registry::{Outbound, SessionRegistry};
pub use session::{run_session, Inbound, OutFrame, PreAuth, SocketError};
pub use sinks::{CallContext, NoSinks, SinkFactory, SinkSet};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::Store;

/// What a stream's session needs from the gateway; cheap to clone (every
/// field is shared).
#[derive(Clone)]
pub struct Runtime {
    pub store: Store,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Tenants' Twilio credentials, for stream tokens' accounts.
    pub twilio: Arc<twilio_auth::TwilioAuth>,
    /// Checks per-call stream tokens.
    pub token_secret: Arc<Secret>,
    /// The provider's REST API: verifies calls nobody announced.
    pub provider: Arc<dyn crate::providers::TelephonyProvider>,
    pub sessions: SessionRegistry,
    /// Where placed audio goes (recording, transcription).
    pub sinks: Arc<dyn SinkFactory>,
}
