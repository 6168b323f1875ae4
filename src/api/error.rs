//! The API's error type: a status and a stable code for clients, with
//! internals logged server-side and never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::providers::ProviderError;
use crate::store::StoreError;

/// A provider failure as seen by our client: 504 when it did not answer,
/// 502 when it failed or refused our credentials, 429 when it throttles us,
/// 422 when it refused this request (number unavailable, invalid `To`).
fn provider_status(e: &ProviderError) -> (StatusCode, &'static str) {
    match e {
        ProviderError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "provider_timeout"),
        ProviderError::Transport(_) => (StatusCode::BAD_GATEWAY, "provider_unavailable"),
        ProviderError::Api { status: 429, .. } => {
            (StatusCode::TOO_MANY_REQUESTS, "provider_throttled")
        }
        ProviderError::Api {
            status: 401 | 403, ..
        } => (StatusCode::BAD_GATEWAY, "provider_auth_failed"),
        ProviderError::Api { status, .. } if (400..500).contains(status) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "provider_rejected")
        }
        ProviderError::InvalidRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "provider_rejected"),
        ProviderError::Api { .. } | ProviderError::Decode(_) | ProviderError::TooLarge { .. } => {
            (StatusCode::BAD_GATEWAY, "provider_error")
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("authentication required")]
    Unauthorized,
    #[error("not allowed")]
    Forbidden,
    /// A state-changing request authenticated by the session cookie came
    /// without the session's CSRF token (or from another origin).
    #[error("missing or wrong CSRF token: send the session's token in X-CSRF-Token")]
    CsrfRejected,
    /// The key is valid but its user's role lacks what the route needs.
    #[error("the {role} role lacks permission {permission}")]
    MissingPermission {
        role: crate::store::Role,
        permission: super::rbac::Permission,
    },
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
    /// A tenant quota (settings `quotas`) is used up.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The telephony provider failed or refused; the message is the
    /// provider's own wording (for the client who made the request).
    #[error("{}", .0.user_message())]
    Provider(#[from] ProviderError),
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Forbidden | AppError::MissingPermission { .. } => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            AppError::CsrfRejected => (StatusCode::FORBIDDEN, "csrf_failed"),
            AppError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            AppError::Provider(e) => provider_status(e),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AppError::NotFound,
            StoreError::Conflict(m) => AppError::Conflict(m),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let AppError::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        if let AppError::Provider(e) = &self {
            // Display leaves the provider's message (which can hold numbers) out.
            tracing::warn!(error = %e, "telephony provider request failed");
        }
        let mut body =
            serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        if let AppError::MissingPermission { permission, .. } = &self {
            body["error"]["permission"] = permission.as_str().into();
        }
        if let AppError::Provider(e) = &self {
            body["error"]["retryable"] = e.is_retryable().into();
            if let Some(code) = e.code() {
                body["error"]["provider_code"] = code.into();
            }
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// `Json<T>` whose rejections are [`AppError`]s, so a bad body gets the same
/// JSON error shape as everything else.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}

/// `Query<T>` whose rejections are JSON errors like every other.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(rejected(rejection.status(), rejection.body_text())),
        }
    }
}

/// An extractor's rejection as our JSON error body.
fn rejected(status: StatusCode, message: String) -> Response {
    let body = serde_json::json!({ "error": { "code": "bad_request", "message": message } });
    (status, Json(body)).into_response()
}
