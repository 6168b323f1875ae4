//! The API's sections, owned by the HTTP surface that enforces them:
//! `[http]` (the server's connection limits), `[auth]` (browser sign-in,
//! sessions and login limits) and `[events]` (the tenant event log behind
//! `/v1/events`). Loaded and layered by [`crate::config`].

use serde::Deserialize;

use crate::config::{invalid, ConfigError};

/// HTTP server limits: every connection, API and WebSocket upgrade alike,
/// before it is upgraded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Connections served at once (not counting upgraded WebSockets, which
    /// `stream.*` bounds); more wait in the listen backlog. Default 4096.
    pub max_connections: usize,
    /// Seconds a client has to send a complete request head once it has
    /// sent its first byte. Default 10.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may sit without a request (fresh or kept
    /// alive) before it is closed. Default 60.
    pub idle_timeout_secs: u64,
    /// Seconds a request body may take to arrive in full. Default 30.
    pub body_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_timeout_secs: 30,
        }
    }
}

impl HttpConfig {
    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let h = self;
        if !(1..=1_000_000).contains(&h.max_connections) {
            return Err(invalid(
                "http.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        for (key, secs) in [
            ("http.header_read_timeout_secs", h.header_read_timeout_secs),
            ("http.idle_timeout_secs", h.idle_timeout_secs),
            ("http.body_timeout_secs", h.body_timeout_secs),
        ] {
            if !(1..=3_600).contains(&secs) {
                return Err(invalid(key, "must be between 1 and 3600"));
            }
        }
        Ok(())
    }
}

/// Browser sign-in (e-mail + password) and sessions. API keys are not
/// affected by any of these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Minutes a session may go unused before it ends. Default 30.
    pub session_idle_minutes: u64,
    /// Hours after sign-in a session ends, used or not. Default 12.
    pub session_absolute_hours: u64,
    /// Failed sign-ins per account (tenant + e-mail) within
    /// `login_window_secs` before that account's sign-in is refused for the
    /// rest of the window. Default 5.
    pub login_max_failures_per_account: u32,
    /// Failed sign-ins per client address within the window. Default 20.
    pub login_max_failures_per_address: u32,
    /// The window the failure counts cover, in seconds. Default 900.
    pub login_window_secs: u64,
    /// Accounts and addresses tracked at once (bounded memory); when full,
    /// the oldest windows are forgotten first. Default 10000.
    pub login_tracked_keys: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_idle_minutes: 30,
            session_absolute_hours: 12,
            login_max_failures_per_account: 5,
            login_max_failures_per_address: 20,
            login_window_secs: 900,
            login_tracked_keys: 10_000,
        }
    }
}

impl AuthConfig {
    /// Session lifetimes in the store's terms.
    pub fn session_lifetime(&self) -> crate::store::SessionLifetime {
        crate::store::SessionLifetime {
            idle_ms: (self.session_idle_minutes * 60_000) as i64,
            absolute_ms: (self.session_absolute_hours * 3_600_000) as i64,
        }
    }

    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = self;
        if !(1..=7 * 24 * 60).contains(&a.session_idle_minutes) {
            return Err(invalid(
                "auth.session_idle_minutes",
                "must be between 1 and 10080 (a week)",
            ));
        }
        if !(1..=24 * 90).contains(&a.session_absolute_hours) {
            return Err(invalid(
                "auth.session_absolute_hours",
                "must be between 1 and 2160 (90 days)",
            ));
        }
        if a.session_idle_minutes > a.session_absolute_hours * 60 {
            return Err(invalid(
                "auth.session_idle_minutes",
                "must not exceed auth.session_absolute_hours",
            ));
        }
        if a.login_max_failures_per_account == 0 || a.login_max_failures_per_address == 0 {
            return Err(invalid("auth.login_max_failures_*", "must be at least 1"));
        }
        if !(1..=86_400).contains(&a.login_window_secs) {
            return Err(invalid(
                "auth.login_window_secs",
                "must be between 1 and 86400",
            ));
        }
        if !(100..=10_000_000).contains(&a.login_tracked_keys) {
            return Err(invalid(
                "auth.login_tracked_keys",
                "must be between 100 and 10000000",
            ));
        }
        Ok(())
    }
}

/// The tenant event log (`/v1/events`): how much a client can resume from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events kept per tenant; older ones are pruned as new ones arrive.
    /// Default 10000.
    pub max_per_tenant: u64,
    /// Hours an event is kept at most. Default 168 (a week).
    pub max_age_hours: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            max_per_tenant: 10_000,
            max_age_hours: 168,
        }
    }
}

impl EventsConfig {
    pub fn retention(&self) -> crate::store::EventRetention {
        crate::store::EventRetention {
            max_per_tenant: self.max_per_tenant as i64,
            max_age_ms: (self.max_age_hours * 3_600_000) as i64,
        }
    }

    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = self;
        if !(100..=10_000_000).contains(&e.max_per_tenant) {
            return Err(invalid(
                "events.max_per_tenant",
                "must be between 100 and 10000000",
            ));
        }
        if !(1..=24 * 365).contains(&e.max_age_hours) {
            return Err(invalid(
                "events.max_age_hours",
                "must be between 1 and 8760 (a year)",
            ));
        }
        Ok(())
    }
}
