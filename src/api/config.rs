//! The API's sections, owned by the HTTP surface that enforces them:
//! `[http]` (the server's connection limits). Loaded and layered by
//! [`crate::config`].

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
