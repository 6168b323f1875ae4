//! HTTP surface: REST, provider stream WebSockets, health and metrics.
//! This layer (with `lib.rs`) is where the domains are wired together.

mod auth;
mod calls;
mod captions;
mod error;
mod jobs;
pub mod rbac;
pub mod recording;
pub mod routes;
mod settings;
pub mod stream;
pub mod transcription;
mod twilio_auth;
mod ui;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Router;

pub use error::AppError;
pub use stream::{SessionRegistry, SinkFactory};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::Store;
use twilio_auth::TwilioAuth;

/// Everything request handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub twilio: Arc<TwilioAuth>,
    /// Signs per-call stream tokens.
    pub token_secret: Arc<Secret>,
    /// Open media sessions, for shutdown and for messages sent back to them.
    pub sessions: SessionRegistry,
    /// Where placed audio goes (recording, transcription); none by default.
    pub sinks: Arc<dyn SinkFactory>,
    /// Live caption feeds of the calls streaming on this node.
    pub captions: crate::asr::captions::CaptionHub,
    /// Encrypted recordings (read, store, delete); `None` when recording is off.
    pub recordings: Option<crate::recording::Recordings>,
    /// The telephony provider's API (webhook checks, recording downloads).
    pub provider: Arc<dyn crate::providers::TelephonyProvider>,
}

impl AppState {
    pub fn new(store: Store, config: Config, token_secret: Secret) -> Self {
        // The config was validated (http(s) base URL, positive timeout),
        // which is all the client needs.
        let provider = crate::providers::twilio::TwilioProvider::new(
            config.providers.twilio.api_base_url.clone(),
            config.providers.twilio.request_timeout(),
        )
        .expect("a validated config builds the Twilio client");
        Self {
            provider: Arc::new(provider),
            twilio: Arc::new(TwilioAuth::new(store.clone())),
            store,
            sessions: SessionRegistry::new(config.stream.max_streams),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            token_secret: Arc::new(token_secret),
            sinks: Arc::new(stream::NoSinks),
            captions: crate::asr::captions::CaptionHub::new(),
            recordings: None,
        }
    }
}

/// The whole HTTP application, built from the route table
/// ([`routes::routes`]) so every route carries its declared access.
pub fn app(state: AppState) -> Router {
    routes::mount(routes::routes(), &state)
        .layer(DefaultBodyLimit::max(256 * 1024))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match sqlx::query("SELECT 1").execute(state.store.pool()).await {
        Ok(_) => (axum::http::StatusCode::OK, "ok"),
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable",
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
