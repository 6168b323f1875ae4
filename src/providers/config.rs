//! The `[providers]` section (`[providers.twilio]`): the telephony
//! provider API clients' settings, owned by the adapters that use them.
//! Loaded and layered by [`crate::config`].

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::config::{de_url_required, invalid, ConfigError};

/// Telephony provider API settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    /// Twilio's REST API (numbers, calls, recordings).
    pub twilio: TwilioConfig,
}

impl ProvidersConfig {
    /// Checks every provider's settings; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.twilio.validate()
    }
}

/// Twilio REST API client settings. Credentials are per tenant, not here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    /// Base URL of the API. Default `https://api.twilio.com`; point it at a
    /// regional edge (`https://api.dublin.ie1.twilio.com`) or a test server.
    /// Recording downloads are only made from this origin.
    #[serde(deserialize_with = "de_url_required")]
    pub api_base_url: Url,
    /// Deadline of one API request (send and read the answer); for recording
    /// downloads, of the response head and of each body chunk.
    pub request_timeout_ms: u64,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        Self {
            api_base_url: Url::parse(crate::providers::twilio::rest::DEFAULT_API_BASE_URL)
                .expect("literal URL"),
            request_timeout_ms: 10_000,
        }
    }
}

impl TwilioConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = self;
        if !matches!(t.api_base_url.scheme(), "http" | "https") || t.api_base_url.host().is_none() {
            return Err(invalid(
                "providers.twilio.api_base_url",
                "must be an http(s) URL with a host",
            ));
        }
        if t.api_base_url.query().is_some() || t.api_base_url.fragment().is_some() {
            return Err(invalid(
                "providers.twilio.api_base_url",
                "must not carry a query or fragment",
            ));
        }
        if !(100..=120_000).contains(&t.request_timeout_ms) {
            return Err(invalid(
                "providers.twilio.request_timeout_ms",
                "must be between 100 and 120000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::env;
    use crate::config::{Config, Overrides};

    #[test]
    fn twilio_api_settings() {
        let cfg = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(
            cfg.providers.twilio.api_base_url.as_str(),
            "https://api.twilio.com/"
        );
        assert_eq!(
            cfg.providers.twilio.request_timeout(),
            Duration::from_secs(10)
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[providers.twilio]\napi_base_url = \"http://127.0.0.1:9000\"\nrequest_timeout_ms = 2500\n",
        )
        .unwrap();
        let cfg = Config::load(
            Some(&path),
            env(&[("CALLSTREAM_PROVIDERS__TWILIO__REQUEST_TIMEOUT_MS", "750")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            cfg.providers.twilio.api_base_url.as_str(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(cfg.providers.twilio.request_timeout_ms, 750);

        let cfg = Config::load(
            None,
            env(&[(
                "CALLSTREAM_PROVIDERS__TWILIO__API_BASE_URL",
                "https://api.dublin.ie1.twilio.com",
            )]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            cfg.providers.twilio.api_base_url.host_str(),
            Some("api.dublin.ie1.twilio.com")
        );

        for (name, value, key) in [
            (
                "CALLSTREAM_PROVIDERS__TWILIO__API_BASE_URL",
                "ftp://x",
                "api_base_url",
            ),
            (
                "CALLSTREAM_PROVIDERS__TWILIO__API_BASE_URL",
                "not a url",
                "API_BASE_URL",
            ),
            (
                "CALLSTREAM_PROVIDERS__TWILIO__REQUEST_TIMEOUT_MS",
                "0",
                "request_timeout_ms",
            ),
        ] {
            let err = Config::load(None, env(&[(name, value)]), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        std::fs::write(&path, "[providers.twilio]\napi_base = \"x\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("api_base"), "{err}");
    }
}
