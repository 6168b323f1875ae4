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
use super::{
    calls, captions, crm, events, jobs, openapi, phone_numbers, recordings, session, settings,
    stream, ui, usage, webhooks, AppState,
};
use crate::store::TenantSettings;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No API key. The text says why that is safe: the route authenticates
    /// by other means (provider signatures, stream tokens) or serves no
    /// tenant data.
    Public(&'static str),
    /// `Authorization: Bearer <api key>`, or a signed-in session's cookie
    /// (with its CSRF token on state-changing methods), whose user's role
    /// holds the permission.
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
    /// What the OpenAPI document says of it (see [`super::openapi`]).
    pub doc: super::openapi::Doc,
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
                doc: super::openapi::Doc::default(),
                handler: routing::$fn(handler),
            }
        }
    )+};
}

impl Route {
    constructors!(get => GET, post => POST, put => PUT, patch => PATCH, delete => DELETE);

    /// One line for the API docs.
    pub fn summary(mut self, summary: &'static str) -> Self {
        self.doc.summary = Some(summary);
        self
    }

    /// The JSON request body's type, for the OpenAPI document.
    pub fn body<T: utoipa::ToSchema>(mut self) -> Self {
        self.doc.body = Some(super::openapi::schema_of::<T>);
        self
    }

    /// The query parameters' type.
    pub fn query<T: utoipa::IntoParams>(mut self) -> Self {
        self.doc.query = Some(super::openapi::query_of::<T>);
        self
    }

    /// The 200 response's JSON type.
    pub fn returns<T: utoipa::ToSchema>(mut self) -> Self {
        self.doc.response = Some(super::openapi::schema_of::<T>);
        self
    }
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
        Route::get("/ui/", Public("static console shell; holds no data, its API calls carry the session"), ui::shell),
        Route::get("/ui/login", Public("the sign-in form"), session::login_page),
        Route::post("/ui/login", Public("sign-in: checks the password; rate limited per account and address"), session::login).summary("sign in (form: tenant, email, password); sets the session cookie"),
        Route::post("/ui/logout", Public("sign-out: ends the cookie's session, with its CSRF token"), session::logout).summary("sign out (form field csrf or X-CSRF-Token)"),
        Route::get("/ui/session", Key(CallsRead), session::session_info).summary("the signed-in user, role, permissions and CSRF token"),
        Route::get("/v1/events", KeyOrQueryToken(CallsRead), events::sse).query::<events::EventsQuery>().summary("the tenant's events as Server-Sent Events (Last-Event-ID resumes)"),
        Route::get("/v1/events/ws", KeyOrQueryToken(CallsRead), events::ws).query::<events::EventsQuery>().summary("the tenant's events over WebSocket (?last_event_id resumes)"),
        Route::get("/openapi.json", Public("the API's description; no tenant data"), openapi::openapi_json).summary("this OpenAPI document"),
        Route::get("/docs", Public("the API's description; no tenant data"), openapi::docs_page).summary("API docs page"),
        Route::get("/v1/providers/twilio/stream", Public("Twilio media stream: X-Twilio-Signature or per-call stream token"), stream::twilio_upgrade),
        Route::post("/v1/providers/twilio/voice", Public("Twilio signature"), webhooks::voice),
        Route::post("/v1/providers/twilio/status", Public("Twilio signature"), webhooks::status),
        Route::post("/v1/providers/twilio/recording", Public("Twilio signature"), jobs::twilio_recording_callback),
        Route::get("/v1/calls", Key(CallsRead), calls::list),
        Route::post("/v1/calls", Key(CallsCreate), calls::create).body::<calls::CreateCall>().summary("place an outbound call through the provider"),
        Route::get("/v1/calls/{id}", Key(CallsRead), calls::get),
        Route::patch("/v1/calls/{id}", Key(CallsUpdate), calls::patch).body::<calls::PatchCall>().summary("update a call's record, or control it live"),
        Route::post("/v1/calls/{id}/ticket", Key(TicketsWrite), calls::to_ticket),
        Route::get("/v1/calls/{id}/captions", KeyOrQueryToken(TranscriptsRead), captions::captions),
        Route::get("/v1/calls/{id}/transcript", Key(TranscriptsRead), captions::transcript),
        Route::post("/v1/calls/{id}/stream/messages", Key(CallsControl), stream::send_to_stream).body::<stream::Outbound>().summary("send media, a mark or clear back on the call's open stream"),
        Route::get("/v1/customers", Key(CustomersRead), crm::list_customers),
        Route::post("/v1/customers", Key(CustomersWrite), crm::create_customer).body::<crm::CreateCustomer>(),
        Route::get("/v1/customers/{id}", Key(CustomersRead), crm::get_customer),
        Route::patch("/v1/customers/{id}", Key(CustomersWrite), crm::patch_customer).body::<crm::PatchCustomer>(),
        Route::delete("/v1/customers/{id}", Key(CustomersDelete), crm::delete_customer),
        Route::get("/v1/tickets", Key(TicketsRead), crm::list_tickets),
        Route::post("/v1/tickets", Key(TicketsWrite), crm::create_ticket).body::<crm::CreateTicket>(),
        Route::get("/v1/tickets/{id}", Key(TicketsRead), crm::get_ticket),
        Route::patch("/v1/tickets/{id}", Key(TicketsWrite), crm::patch_ticket).body::<crm::PatchTicket>(),
        Route::delete("/v1/tickets/{id}", Key(TicketsDelete), crm::delete_ticket),
        Route::get("/v1/phone-numbers", Key(PhoneNumbersRead), phone_numbers::list),
        Route::post("/v1/phone-numbers", Key(PhoneNumbersManage), phone_numbers::provision).body::<phone_numbers::ProvisionBody>().summary("buy a number through the provider"),
        Route::delete("/v1/phone-numbers/{id}", Key(PhoneNumbersManage), phone_numbers::release),
        Route::get("/v1/usage", Key(UsageRead), usage::get),
        Route::get("/v1/recordings/{id}", Key(RecordingsRead), recordings::get),
        Route::delete("/v1/recordings/{id}", Key(RecordingsDelete), recordings::delete),
        Route::get("/v1/recordings/{id}/download", Public("signed URL: HMAC over method, path, tenant, expiry and key id; expires"), recordings::download),
        Route::post("/v1/calls/{id}/transcriptions", Key(TranscriptionsCreate), jobs::create_transcription),
        Route::get("/v1/transcription-jobs/{id}", Key(TranscriptsRead), jobs::get_transcription_job),
        Route::get("/v1/settings/telephony", Key(SettingsRead), settings::get).returns::<TenantSettings>().summary("the tenant's telephony settings"),
        Route::put("/v1/settings/telephony", Key(SettingsManage), settings::put).body::<TenantSettings>().returns::<TenantSettings>().summary("replace the telephony settings (every field)"),
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
