//! The `[recording]` section: encrypted call recordings, owned by the
//! domain that writes them. Loaded and layered by [`crate::config`]
//! (which resolves the paths that default under `data_dir`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{invalid, ConfigError};

/// Call recording settings. Recordings are age files (X25519, 64 KiB
/// ChaCha20-Poly1305 chunks) of stereo WAVs, encrypted to per-tenant keys
/// that are themselves wrapped by the master key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Record streamed calls.
    pub enabled: bool,
    /// Root of the local recording storage. Default `{data_dir}/recordings`.
    pub dir: Option<PathBuf>,
    /// File holding the master key (64 hex digits) that wraps tenant keys;
    /// created with mode 0600 on first start when absent. Default
    /// `{data_dir}/keys/master.key`. Unused when `master_key` is set.
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, 64 hex digits (e.g. from
    /// `CALLSTREAM_RECORDING__MASTER_KEY`). Every node of a cluster needs
    /// the same one. Never logged, never stored in the database.
    pub master_key: Option<crate::secret::Secret>,
    /// Longest recording; audio past it is not written (bounds the storage
    /// one call can take).
    pub max_duration_secs: u64,
    /// Keys that sign download links, oldest first; the last signs, all
    /// verify (rotate by appending, drop old ones later). Default: the ring
    /// in `{data_dir}/keys/url-signing.keys`, created on first start.
    pub url_signing_keys: Option<crate::recording::signing::SigningKeys>,
    /// Lifetime of a signed download link, in minutes.
    pub url_ttl_minutes: u32,
    /// How often the retention worker looks for recordings past their
    /// tenant's `retention_days`.
    pub retention_interval_secs: u64,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            master_key_file: None,
            master_key: None,
            max_duration_secs: 4 * 3600,
            url_signing_keys: None,
            url_ttl_minutes: 15,
            retention_interval_secs: 3600,
        }
    }
}

impl RecordingConfig {
    /// Checks every bound; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
        if let Some(key) = &r.master_key {
            let k = key.expose().trim();
            if k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "recording.master_key",
                    "must be 64 hex digits (32 bytes)",
                ));
            }
        }
        if !(60..=48 * 3600).contains(&r.max_duration_secs) {
            return Err(invalid(
                "recording.max_duration_secs",
                "must be between 60 and 172800",
            ));
        }
        if let Some(keys) = &r.url_signing_keys {
            crate::recording::signing::validate_keys(&keys.0)
                .map_err(|m| invalid("recording.url_signing_keys", m))?;
        }
        if !(1..=7 * 24 * 60).contains(&r.url_ttl_minutes) {
            return Err(invalid(
                "recording.url_ttl_minutes",
                "must be between 1 and 10080 (a week)",
            ));
        }
        if !(1..=7 * 86_400).contains(&r.retention_interval_secs) {
            return Err(invalid(
                "recording.retention_interval_secs",
                "must be between 1 and 604800",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::tests::env;
    use crate::config::{Config, Overrides};

    #[test]
    fn recording_settings_and_a_bad_master_key_that_is_not_echoed() {
        let key = "ab".repeat(32);
        let cfg = Config::load(
            None,
            env(&[
                ("CALLSTREAM_RECORDING__ENABLED", "false"),
                ("CALLSTREAM_RECORDING__MASTER_KEY", &key),
                ("CALLSTREAM_RECORDING__DIR", "/srv/rec"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert!(!cfg.recording.enabled);
        assert_eq!(cfg.recording_dir(), PathBuf::from("/srv/rec"));
        assert_eq!(cfg.master_key_file(), PathBuf::from("data/keys/master.key"));
        assert!(!format!("{cfg:?}").contains(&key));

        let bad = "not-hex-secret-value";
        let err = Config::load(
            None,
            env(&[("CALLSTREAM_RECORDING__MASTER_KEY", bad)]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("recording.master_key"), "{err}");
        assert!(!err.to_string().contains(bad));
    }

    #[test]
    fn url_signing_keys_ttl_and_retention_interval() {
        let secret = "s".repeat(40);
        let cfg = Config::load(
            None,
            env(&[
                (
                    "CALLSTREAM_RECORDING__URL_SIGNING_KEYS",
                    &format!("old:{secret},new:{secret}"),
                ),
                ("CALLSTREAM_RECORDING__URL_TTL_MINUTES", "5"),
                ("CALLSTREAM_RECORDING__RETENTION_INTERVAL_SECS", "60"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        let keys = &cfg.recording.url_signing_keys.as_ref().unwrap().0;
        assert_eq!(
            keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            ["old", "new"]
        );
        assert_eq!(cfg.recording.url_ttl_minutes, 5);
        assert_eq!(cfg.recording.retention_interval_secs, 60);
        assert!(!format!("{cfg:?}").contains(&secret));
        for (name, value, key) in [
            (
                "CALLSTREAM_RECORDING__URL_SIGNING_KEYS",
                "a:short",
                "recording.url_signing_keys",
            ),
            (
                "CALLSTREAM_RECORDING__URL_TTL_MINUTES",
                "0",
                "recording.url_ttl_minutes",
            ),
            (
                "CALLSTREAM_RECORDING__RETENTION_INTERVAL_SECS",
                "0",
                "recording.retention_interval_secs",
            ),
        ] {
            let err = Config::load(None, env(&[(name, value)]), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let file = "[recording]\nurl_ttl_minutes = 30\nurl_signing_keys = [{ id = \"k1\", secret = \"0123456789abcdef0123456789abcdef\" }]\n";
        let cfg: Config = toml::from_str(file).unwrap();
        assert_eq!(cfg.recording.url_signing_keys.unwrap().0[0].id, "k1");
    }
}
