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
            .and_then(|v| v.to_str().ok())
            .ok_or(AppError::Unauthorized)?;
        let key = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(AppError::Unauthorized)?
            .trim();
        state
            .store
            .authenticate_api_key(key)
            .await?
            .map(Auth)
            .ok_or(AppError::Unauthorized)
    }
}
