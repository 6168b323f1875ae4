//! Bearer-key and session-cookie authentication and permission checks for
//! the REST API.
//!
//! The check runs as a layer that [`super::routes`] puts on every route
//! declared with a permission, before any extractor reads the body: missing
//! or bad key → 401, role without the permission → 403 naming it. Handlers
//! take [`Auth`] for the caller; it only exists on a request that passed the
//! layer, so a handler mounted outside the route table fails closed (500)
//! instead of serving anyone.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::rbac::Permission;
use super::{AppError, AppState};
use crate::store::Principal;

/// The authenticated caller. Every handler that takes it is tenant-scoped by
/// `principal.tenant_id`.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

/// Put in a request's extensions by [`require`] only (private fields: nothing
/// else can make one).
#[derive(Debug, Clone)]
struct Authorized {
    principal: Principal,
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        parts
            .extensions
            .get::<Authorized>()
            .map(|a| Auth(a.principal.clone()))
            .ok_or_else(|| {
                AppError::Internal(format!(
                    "{} takes Auth but is not declared with a permission in api::routes",
                    parts.uri.path()
                ))
            })
    }
}

/// What one route's guard checks.
#[derive(Clone)]
pub(super) struct Guard {
    pub state: AppState,
    pub permission: Permission,
    /// Also accept the key as `?access_token=`: browsers cannot set headers
    /// on WebSocket or EventSource requests.
    pub query_token: bool,
}

/// The layer function: authenticate, authorise, then run the handler.
pub(super) async fn require(State(guard): State<Guard>, mut req: Request, next: Next) -> Response {
    let principal = match authenticate(&guard, req.method(), req.headers(), req.uri().query()).await
    {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !guard.permission.granted_to(principal.role) {
        return AppError::MissingPermission {
            role: principal.role,
            permission: guard.permission,
        }
        .into_response();
    }
    req.extensions_mut().insert(Authorized { principal });
    next.run(req).await
}

/// An `Authorization: Bearer` key, else the session cookie (with its CSRF
/// and Origin checks, see [`super::session`]), else `?access_token=` where
/// the route allows it. Both paths end in the same permission check.
async fn authenticate(
    guard: &Guard,
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
    query: Option<&str>,
) -> Result<Principal, AppError> {
    if !headers.contains_key(axum::http::header::AUTHORIZATION) {
        if let Some(p) = super::session::cookie_principal(&guard.state, method, headers).await? {
            return Ok(p);
        }
    }
    let key = match headers.get(axum::http::header::AUTHORIZATION) {
        Some(h) => h
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .ok_or(AppError::Unauthorized)?
            .trim()
            .to_string(),
        None if guard.query_token => query_token(query).ok_or(AppError::Unauthorized)?,
        None => return Err(AppError::Unauthorized),
    };
    guard
        .state
        .store
        .authenticate_api_key(&key)
        .await?
        .ok_or(AppError::Unauthorized)
}

fn query_token(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request as HttpRequest, StatusCode};
    use tower::ServiceExt;

    /// A handler mounted around the route table cannot be reached: `Auth`
    /// only comes from the permission layer.
    #[tokio::test]
    async fn auth_outside_the_route_table_fails_closed() {
        let rogue = axum::Router::new().route(
            "/v1/rogue",
            axum::routing::get(|Auth(who): Auth| async move { who.tenant_id }),
        );
        let resp = rogue
            .oneshot(
                HttpRequest::get("/v1/rogue")
                    .header("authorization", "Bearer csk_0123456789ab_anything")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn access_token_is_read_from_the_query() {
        assert_eq!(
            query_token(Some("a=1&access_token=csk_x%2By")).as_deref(),
            Some("csk_x+y")
        );
        assert_eq!(query_token(Some("token=x")), None);
        assert_eq!(query_token(None), None);
    }
}
