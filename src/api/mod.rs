//! HTTP surface: REST, provider stream WebSockets, health and metrics.
//! This layer (with `lib.rs`) is where the domains are wired together.

mod auth;
mod calls;
mod captions;
pub mod config;
mod crm;
mod error;
mod events;
mod jobs;
pub mod openapi;
mod phone_numbers;
pub mod quota;
pub mod rbac;
pub mod recordings;
pub mod routes;
pub mod server;
pub mod session;
mod settings;
pub mod stream;
mod ui;
mod usage;
mod webhooks;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Router;

pub use error::AppError;

use crate::config::Config;
use crate::gateway::twilio_auth::TwilioAuth;
use crate::gateway::{SessionRegistry, SinkFactory};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::Store;

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
    /// Signs and checks recording download links.
    pub url_signer: Arc<crate::recording::signing::UrlSigner>,
    /// The telephony provider's REST API (calls, live controls); requests
    /// carry each tenant's own credentials.
    pub provider: Arc<dyn crate::providers::TelephonyProvider>,
    /// Failed sign-ins per account and client address (`[auth]`).
    pub login_limiter: Arc<session::LoginLimiter>,
    /// Cancelled when the gateway begins shutting down: long-lived event
    /// streams end then instead of holding their connections open.
    pub closing: tokio_util::sync::CancellationToken,
}

/// The Twilio REST client from `[providers.twilio]`. Config validation has
/// already checked the URL and timeout `TwilioProvider::new` checks again.
fn twilio_provider(config: &Config) -> Arc<dyn crate::providers::TelephonyProvider> {
    let t = &config.providers.twilio;
    match crate::providers::twilio::TwilioProvider::new(t.api_base_url.clone(), t.request_timeout())
    {
        Ok(p) => Arc::new(p),
        Err(e) => panic!("providers.twilio passed validation but is unusable: {e}"),
    }
}

impl AppState {
    pub fn new(store: Store, config: Config, token_secret: Secret) -> Self {
        let provider = twilio_provider(&config);
        let url_signer = Arc::new(url_signer(&config));
        let metrics = Arc::new(Metrics::new());
        store.set_event_retention(config.events.retention());
        Self {
            login_limiter: Arc::new(session::LoginLimiter::new(&config.auth)),
            closing: tokio_util::sync::CancellationToken::new(),
            twilio: Arc::new(TwilioAuth::new(
                store.clone(),
                metrics.clone(),
                std::time::Duration::from_millis(config.stream.credentials_refresh_ms),
            )),
            store,
            sessions: SessionRegistry::with_limits(
                config.stream.max_streams,
                config.stream.max_pending_upgrades,
            ),
            config: Arc::new(config),
            metrics,
            token_secret: Arc::new(token_secret),
            sinks: Arc::new(crate::gateway::NoSinks),
            captions: crate::asr::captions::CaptionHub::new(),
            recordings: None,
            provider,
            url_signer,
        }
    }
}

impl AppState {
    /// What the call runtime needs of this state, for a stream's session.
    pub fn runtime(&self) -> crate::gateway::Runtime {
        crate::gateway::Runtime {
            store: self.store.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            twilio: self.twilio.clone(),
            token_secret: self.token_secret.clone(),
            provider: self.provider.clone(),
            sessions: self.sessions.clone(),
            sinks: self.sinks.clone(),
        }
    }

    /// The tenant's account at the telephony provider, for requests made on
    /// its behalf; 409 when the tenant has none configured.
    pub async fn provider_credentials(
        &self,
        tenant_id: &str,
    ) -> Result<crate::providers::Credentials, AppError> {
        match self.store.tenant_twilio_credentials(tenant_id).await? {
            Some(c) => Ok(crate::providers::Credentials::new(
                c.account_sid,
                c.auth_token,
            )),
            None => Err(AppError::Conflict(
                "this tenant has no Twilio account configured".into(),
            )),
        }
    }

    /// `path` under the public base URL providers reach us at, exactly as
    /// they will call (and sign) it.
    pub fn public_endpoint(&self, path: &str) -> Result<url::Url, AppError> {
        let base = self.config.public_url();
        let url = format!(
            "{}/{}",
            base.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url::Url::parse(&url).map_err(|e| AppError::Internal(format!("public URL: {e}")))
    }
}

/// The configured link signing keys; without any, a key that lives as long
/// as the process (`callstream serve` loads or creates the key file
/// instead: see [`crate::recording::signing::UrlSigner::load_or_create`]).
fn url_signer(config: &Config) -> crate::recording::signing::UrlSigner {
    use crate::recording::signing::UrlSigner;
    config
        .recording
        .url_signing_keys
        .as_ref()
        .and_then(|k| UrlSigner::new(k.0.clone()).ok())
        .unwrap_or_else(UrlSigner::ephemeral)
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
