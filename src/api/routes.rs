//! The route table: every HTTP route with its method, path and who may call
//! it. [`super::app`] is built from this table alone, and a [`Route`] cannot
//! be made without an [`Access`], so no route is mounted without a declared
//! permission (or a stated reason to be public). tests/rbac.rs walks this
//! table: each route × each role gets 403 exactly when the role lacks the
//! permission, and each route taking an id answers 404 for another tenant's.
//!
//! Adding an endpoint is one line in [`routes`]; nothing else to wire.

use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{self, MethodRouter};
use axum::Router;

use super::auth::{require, Guard};
use super::rbac::Permission;
use super::{calls, captions, jobs, settings, stream, ui, AppState};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No API key. The text says why that is safe: the route authenticates
    /// by other means (provider signatures, stream tokens) or serves no
    /// tenant data.
    Public(&'static str),
    /// `Authorization: Bearer <api key>` whose user's role holds the
    /// permission.
    Key(Permission),
    /// As [`Access::Key`], and browsers may pass the key as
    /// `?access_token=` (WebSocket and EventSource cannot set headers).
    KeyOrQueryToken(Permission),
}

impl Access {
    /// The permission needed, `None` for public routes.
    pub fn permission(self) -> Option<Permission> {
        match self {
            Access::Public(_) => None,
            Access::Key(p) | Access::KeyOrQueryToken(p) => Some(p),
        }
    }
}

/// One declared route.
pub struct Route {
    pub method: Method,
    /// axum path syntax: `/v1/calls/{id}`.
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter<AppState>,
}

macro_rules! constructors {
    ($($fn:ident => $method:ident),+) => {$(
        pub fn $fn<H, T>(path: &'static str, access: Access, handler: H) -> Self
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            Route {
                method: Method::$method,
                path,
                access,
                handler: routing::$fn(handler),
            }
        }
    )+};
}

impl Route {
    constructors!(get => GET, post => POST, put => PUT, patch => PATCH, delete => DELETE);
}

/// Every route the gateway serves, one line each (kept as a table, hence
/// `rustfmt::skip`). Keep paths grouped by resource.
#[rustfmt::skip]
pub fn routes() -> Vec<Route> {
    use Access::{Key, KeyOrQueryToken, Public};
    use Permission::*;
    vec![
        Route::get("/healthz", Public("liveness: says whether the database answers"), super::healthz),
        Route::get("/metrics", Public("Prometheus scrape: aggregate counters, no tenant ids or data"), super::metrics),
        Route::get("/ui/calls/{id}", Public("static page; holds no data, its API calls carry the key"), ui::page),
        Route::get("/ui/assets/{file}", Public("static script and styles"), ui::asset),
        Route::get("/v1/providers/twilio/stream", Public("Twilio media stream: X-Twilio-Signature or per-call stream token"), stream::twilio_upgrade),
        Route::post("/v1/providers/twilio/recording", Public("Twilio signature"), jobs::twilio_recording_callback),
        Route::get("/v1/calls", Key(CallsRead), calls::list),
        Route::get("/v1/calls/{id}", Key(CallsRead), calls::get),
        Route::get("/v1/calls/{id}/captions", KeyOrQueryToken(TranscriptsRead), captions::captions),
        Route::get("/v1/calls/{id}/transcript", Key(TranscriptsRead), captions::transcript),
        Route::post("/v1/calls/{id}/stream/messages", Key(CallsControl), stream::send_to_stream),
        Route::post("/v1/calls/{id}/transcriptions", Key(TranscriptionsCreate), jobs::create_transcription),
        Route::get("/v1/transcription-jobs/{id}", Key(TranscriptsRead), jobs::get_transcription_job),
        Route::get("/v1/settings/telephony", Key(SettingsRead), settings::get),
        Route::put("/v1/settings/telephony", Key(SettingsManage), settings::put),
    ]
}

/// The router for `table`: each protected route behind its permission
/// check. Panics on a method declared twice for one path (axum refuses
/// overlapping routes), which every test building the app would catch.
pub(super) fn mount(table: Vec<Route>, state: &AppState) -> Router<AppState> {
    table.into_iter().fold(Router::new(), |router, route| {
        let handler = match route.access {
            Access::Public(_) => route.handler,
            Access::Key(permission) | Access::KeyOrQueryToken(permission) => {
                let guard = Guard {
                    state: state.clone(),
                    permission,
                    query_token: matches!(route.access, Access::KeyOrQueryToken(_)),
                };
                // `route_layer`: the check guards this method only; other
                // methods on the path still answer 405, not 401.
                route
                    .handler
                    .route_layer(from_fn_with_state(guard, require))
            }
        };
        router.route(route.path, handler)
    })
}
