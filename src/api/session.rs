//! Sign-in for people: `/ui/login`, `/ui/logout`, `/ui/session`, the
//! session cookie, CSRF and login rate limits.
//!
//! A session authenticates the same `/v1` routes as an API key, with the
//! user's role ([`super::auth`] asks [`cookie_principal`] when a request has
//! no `Authorization` header). Because browsers attach cookies on their own,
//! every state-changing request authenticated by the cookie must carry the
//! session's CSRF token (`X-CSRF-Token`, or a `csrf` form field on the
//! sign-out form) and any `Origin` it sends must be ours; requests with an
//! API key carry no ambient credential and are exempt.
//!
//! E-mails are unique per tenant, not globally, so the sign-in form asks for
//! the organisation (tenant id) too; `/ui/login?tenant=ID` fills it in, so a
//! tenant hands its people one link.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use subtle::ConstantTimeEq;

use super::auth::Auth;
use super::rbac::Permission;
use super::{ui, AppError, AppState};
use crate::api::config::AuthConfig;
use crate::secret::Secret;
use crate::store::{csrf_token, now_ms, Principal};

/// The session cookie's name.
pub const COOKIE: &str = "callstream_session";
/// The header carrying the CSRF token on requests made by the console.
pub const CSRF_HEADER: &str = "x-csrf-token";

// ---------------------------------------------------------------------------
// Rate limiting

/// Failed sign-ins per account and per client address in fixed windows.
/// Memory is bounded: at most `max_keys` windows are kept; when full,
/// lapsed windows go first, then the least used.
pub struct LoginLimiter {
    windows: Mutex<HashMap<String, Window>>,
    max_keys: usize,
    window: Duration,
    per_account: u32,
    per_address: u32,
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl LoginLimiter {
    pub fn new(cfg: &AuthConfig) -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            max_keys: cfg.login_tracked_keys,
            window: Duration::from_secs(cfg.login_window_secs),
            per_account: cfg.login_max_failures_per_account,
            per_address: cfg.login_max_failures_per_address,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        // Each critical section is one map operation: a panic cannot leave
        // it half-changed, so a poisoned lock is still sound.
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keys(&self, account: &str, address: &str) -> [(String, u32); 2] {
        [
            (format!("a:{account}"), self.per_account),
            (format!("i:{address}"), self.per_address),
        ]
    }

    /// `Err(retry_after)` when the account or the address has used up its
    /// failures in the current window.
    pub fn check(&self, account: &str, address: &str, now: Instant) -> Result<(), Duration> {
        let windows = self.lock();
        let mut wait = None;
        for (key, limit) in self.keys(account, address) {
            if let Some(w) = windows.get(&key) {
                let elapsed = now.saturating_duration_since(w.started);
                if elapsed < self.window && w.failures >= limit {
                    let left = self.window - elapsed;
                    wait = Some(wait.map_or(left, |d: Duration| d.max(left)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    pub fn record_failure(&self, account: &str, address: &str, now: Instant) {
        let mut windows = self.lock();
        for (key, _) in self.keys(account, address) {
            if !windows.contains_key(&key) && windows.len() >= self.max_keys {
                let window = self.window;
                windows.retain(|_, w| now.saturating_duration_since(w.started) < window);
                if windows.len() >= self.max_keys {
                    // The least used goes: a busy guessing address (many
                    // failures) outlives the one-off accounts it tries.
                    if let Some(victim) = windows
                        .iter()
                        .min_by_key(|(_, w)| (w.failures, w.started))
                        .map(|(k, _)| k.clone())
                    {
                        windows.remove(&victim);
                    }
                }
            }
            let w = windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now.saturating_duration_since(w.started) >= self.window {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures += 1;
        }
    }

    /// A successful sign-in clears the account's count (not the address's:
    /// one good password must not reset a guessing run from that address).
    pub fn record_success(&self, account: &str) {
        self.lock().remove(&format!("a:{account}"));
    }

    /// Windows tracked now (tests).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

// ---------------------------------------------------------------------------
// Cookies, CSRF, Origin

/// The session token from the request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

fn set_cookie(state: &AppState, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if state.config.public_url().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let cookie =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether an `Origin` header, if the browser sent one, is this gateway:
/// the public URL's origin, or the origin the request was addressed to.
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if origin == state.config.public_url().origin().ascii_serialization() {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    host.is_some_and(|host| {
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            == Some(host)
    })
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn csrf_matches(token: &str, given: &str) -> bool {
    bool::from(csrf_token(token).as_bytes().ct_eq(given.as_bytes()))
}

/// The principal of the request's session cookie, for [`super::auth`]:
/// `Ok(None)` without a cookie or with a dead session; 403 for a foreign
/// `Origin` or, on a state-changing method, a missing or wrong CSRF token.
pub(super) async fn cookie_principal(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Principal>, AppError> {
    let Some(token) = session_cookie(headers) else {
        return Ok(None);
    };
    // A dead session is no credential: other ones may still follow.
    let Some(principal) = state
        .store
        .authenticate_session(&token, state.config.auth.session_lifetime(), now_ms())
        .await?
    else {
        return Ok(None);
    };
    if !origin_allowed(state, headers) {
        return Err(AppError::Forbidden);
    }
    if !is_safe(method) {
        let given = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !csrf_matches(&token, given) {
            return Err(AppError::CsrfRejected);
        }
    }
    Ok(Some(principal))
}

// ---------------------------------------------------------------------------
// Handlers

#[derive(Debug, serde::Deserialize)]
pub struct LoginQuery {
    tenant: Option<String>,
}

/// `GET /ui/login`: the sign-in form.
pub async fn login_page(Query(q): Query<LoginQuery>) -> Response {
    ui::login_page(
        StatusCode::OK,
        q.tenant.as_deref().unwrap_or_default(),
        "",
        None,
    )
}

/// The sign-in form's fields.
#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: Option<Secret>,
}

/// `POST /ui/login`: checks the e-mail and password (form-encoded), starts a
/// session and sends the browser to `/ui/`; a failure shows the form again
/// with a message (401, or 429 with `Retry-After` once the limits bite).
pub async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    if !origin_allowed(&state, &headers) {
        return Err(AppError::Forbidden);
    }
    let form: LoginForm = match serde_urlencoded_form(&body) {
        Some(f) => f,
        None => {
            return Ok(ui::login_page(
                StatusCode::BAD_REQUEST,
                "",
                "",
                Some("The sign-in form was not understood. Reload the page and try again."),
            ))
        }
    };
    let tenant = form.tenant.trim();
    let email = form.email.trim().to_lowercase();
    let password = match form.password {
        Some(p) if !tenant.is_empty() && !email.is_empty() && !p.expose().is_empty() => p,
        _ => {
            return Ok(ui::login_page(
                StatusCode::BAD_REQUEST,
                tenant,
                &email,
                Some("Enter your organisation ID, e-mail and password."),
            ))
        }
    };
    let address = peer.map_or_else(|| "unknown".to_string(), |p| (p.0).0.ip().to_string());
    let account = format!("{tenant}\n{email}");
    let limiter = &state.login_limiter;
    if let Err(wait) = limiter.check(&account, &address, Instant::now()) {
        // Rounded up: asking again after Retry-After seconds succeeds.
        let secs = (wait.as_millis() as u64).div_ceil(1000).max(1);
        let minutes = secs.div_ceil(60);
        let message = format!(
            "Too many failed sign-in attempts. Try again in {minutes} minute{}.",
            if minutes == 1 { "" } else { "s" }
        );
        let mut resp = ui::login_page(
            StatusCode::TOO_MANY_REQUESTS,
            tenant,
            &email,
            Some(&message),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(resp);
    }
    let user = match state.store.verify_login(tenant, &email, &password).await? {
        Some(user) => user,
        None => {
            limiter.record_failure(&account, &address, Instant::now());
            tracing::info!("sign-in refused");
            return Ok(ui::login_page(
                StatusCode::UNAUTHORIZED,
                tenant,
                &email,
                Some("The organisation, e-mail or password is not right."),
            ));
        }
    };
    limiter.record_success(&account);
    let lifetime = state.config.auth.session_lifetime();
    let session = state
        .store
        .create_session(&user, lifetime, now_ms())
        .await?;
    tracing::info!(tenant_id = %user.tenant_id, user_id = %user.id, "signed in");
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/")]).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&state, session.token.expose(), lifetime.absolute_ms / 1000),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Form-encoded body → `T`, `None` when it does not parse.
fn serde_urlencoded_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    let pairs: serde_json::Map<String, serde_json::Value> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
        .collect();
    serde_json::from_value(serde_json::Value::Object(pairs)).ok()
}

/// `POST /ui/logout`: ends the session (its row is deleted, so the cookie is
/// dead everywhere) and clears the cookie. Needs the CSRF token (form field
/// `csrf` or `X-CSRF-Token`) when a live session is named, so no other site
/// can sign people out. Without a live session it just clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    if let Some(token) = session_cookie(&headers) {
        let live = state
            .store
            .authenticate_session(&token, state.config.auth.session_lifetime(), now_ms())
            .await?;
        if live.is_some() {
            let field = url::form_urlencoded::parse(&body)
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v.into_owned());
            let given = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or(field)
                .unwrap_or_default();
            if !origin_allowed(&state, &headers) || !csrf_matches(&token, &given) {
                return Err(AppError::CsrfRejected);
            }
            state.store.delete_session(&token).await?;
            tracing::info!("signed out");
        }
    }
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/login")]).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, "", 0));
    Ok(resp)
}

/// What `/ui/session` says of the caller.
#[derive(serde::Serialize)]
struct SessionInfo {
    tenant_id: String,
    user_id: String,
    name: String,
    email: Option<String>,
    role: crate::store::Role,
    /// Every permission the role holds, for the console's navigation.
    permissions: Vec<&'static str>,
    /// For `X-CSRF-Token`; `null` when the caller used an API key.
    csrf_token: Option<String>,
}

/// `GET /ui/session`: who is signed in, with what role and permissions, and
/// the session's CSRF token.
pub async fn session_info(
    State(state): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let user = state.store.get_user(&who.tenant_id, &who.user_id).await?;
    let csrf = (who.key_id == crate::store::SESSION_KEY_ID)
        .then(|| session_cookie(&headers).map(|t| csrf_token(&t)))
        .flatten();
    let info = SessionInfo {
        tenant_id: user.tenant_id,
        user_id: user.id,
        name: user.name,
        email: user.email,
        role: who.role,
        permissions: Permission::ALL
            .iter()
            .filter(|p| p.granted_to(who.role))
            .map(|p| p.as_str())
            .collect(),
        csrf_token: csrf,
    };
    let mut resp = Json(info).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_account: u32, per_address: u32, keys: usize) -> LoginLimiter {
        LoginLimiter::new(&AuthConfig {
            login_max_failures_per_account: per_account,
            login_max_failures_per_address: per_address,
            login_window_secs: 900,
            login_tracked_keys: keys,
            ..AuthConfig::default()
        })
    }

    #[test]
    fn accounts_and_addresses_are_limited_per_window() {
        let l = limiter(3, 5, 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("ann", "1.1.1.1", t0).is_ok());
            l.record_failure("ann", "1.1.1.1", t0);
        }
        let wait = l.check("ann", "2.2.2.2", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(900));
        // Another account from the same address still has tries, until the
        // address's own limit.
        assert!(l.check("bob", "1.1.1.1", t0).is_ok());
        l.record_failure("bob", "1.1.1.1", t0);
        l.record_failure("bob", "1.1.1.1", t0);
        assert!(l.check("cat", "1.1.1.1", t0).is_err());
        assert!(l.check("cat", "3.3.3.3", t0).is_ok());
        // The window lapses.
        let later = t0 + Duration::from_secs(900);
        assert!(l.check("ann", "1.1.1.1", later).is_ok());
        // Success clears the account only.
        l.record_success("ann");
        assert!(l.check("ann", "4.4.4.4", t0).is_ok());
        assert!(l.check("ann", "1.1.1.1", t0).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let l = limiter(3, 1_000_000, 100);
        let t0 = Instant::now();
        for i in 0..1_000 {
            l.record_failure(
                &format!("user{i}"),
                "1.1.1.1",
                t0 + Duration::from_millis(i),
            );
        }
        assert!(l.tracked() <= 100, "{}", l.tracked());
        // The address has the most failures, so it is never the one evicted.
        assert!(l.lock().contains_key("i:1.1.1.1"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; callstream_session=cs_abc ; b=2"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("cs_abc"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }
}
