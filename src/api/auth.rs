//! Bearer-key authentication for the REST API.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{AppError, AppState};
use crate::store::Principal;

/// The authenticated caller. Every handler that takes it is tenant-scoped by
/// `principal.tenant_id`.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let key = match header {
            Some(h) => h
                .strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
                .ok_or(AppError::Unauthorized)?
                .trim()
                .to_string(),
            // Browsers cannot set headers on WebSocket or EventSource
            // requests: those may carry the key as `access_token`.
            None => query_token(parts.uri.query()).ok_or(AppError::Unauthorized)?,
        };
        let key = key.as_str();
        state
            .store
            .authenticate_api_key(key)
            .await?
            .map(Auth)
            .ok_or(AppError::Unauthorized)
    }
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}
