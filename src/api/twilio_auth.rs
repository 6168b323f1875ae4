//! Matching signed Twilio requests to tenants.
//!
//! A Media Streams upgrade request names no account: only its
//! `X-Twilio-Signature` says who sent it. We keep every tenant's credentials in
//! memory and find the one whose auth token produces that signature, before
//! anything is allocated. Tenants created while running (by the CLI, in another
//! process) are picked up by reloading on a miss, at most once a second so bad
//! signatures cannot hammer the database.

use tokio::sync::RwLock;

use crate::providers::twilio::signature;
use crate::store::{Store, StoreError, TwilioCredentials};

pub struct TwilioAuth {
    store: Store,
    cache: RwLock<Cache>,
}

struct Cache {
    creds: Vec<TwilioCredentials>,
    fingerprint: Option<String>,
}

impl TwilioAuth {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: RwLock::new(Cache {
                creds: Vec::new(),
                fingerprint: None,
            }),
        }
    }

    /// The tenant whose auth token signed `url` (with `params`) as `header`.
    pub async fn match_signature(
        &self,
        url: &str,
        params: &[(String, String)],
        header: &str,
    ) -> Result<Option<TwilioCredentials>, StoreError> {
        let find = |creds: &[TwilioCredentials]| {
            creds
                .iter()
                .find(|c| signature::validate(c.auth_token.expose(), url, params, header))
                .cloned()
        };
        {
            let cache = self.cache.read().await;
            if let Some(found) = find(&cache.creds) {
                return Ok(Some(found));
            }
        }
        let fingerprint = self.store.tenants_fingerprint().await?;
        let mut cache = self.cache.write().await;
        if cache.fingerprint.as_ref() != Some(&fingerprint) {
            cache.creds = self.store.all_twilio_credentials().await?;
            cache.fingerprint = Some(fingerprint);
        }
        Ok(find(&cache.creds))
    }
}
