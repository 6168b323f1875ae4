//! Matching signed Twilio requests to tenants.
//!
//! A Media Streams upgrade request names no account: only its
//! `X-Twilio-Signature` says who sent it. We keep every tenant's credentials in
//! memory and find the one whose auth token produces that signature, before
//! anything is allocated. Rejections must stay cheap, so the database is not
//! asked on every miss:
//! - a tenant added (or its credentials changed) through this process bumps
//!   [`Store::tenants_generation`], and the next look-up reloads at once;
//! - tenants changed by another process (the CLI) are found by comparing
//!   [`Store::tenants_fingerprint`] on a miss, at most once per
//!   `refresh` interval, however many bad signatures arrive;
//! - [`TwilioAuth::invalidate`] forces a reload on the next look-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

use crate::metrics::Metrics;
use crate::providers::twilio::signature;
use crate::store::{Store, StoreError, TwilioCredentials};

pub struct TwilioAuth {
    store: Store,
    metrics: Arc<Metrics>,
    refresh: Duration,
    cache: RwLock<Cache>,
}

struct Cache {
    creds: Vec<TwilioCredentials>,
    fingerprint: Option<String>,
    /// The store generation `creds` were loaded at; `None`: never / invalidated.
    generation: Option<u64>,
    /// When the database was last asked.
    checked_at: Option<Instant>,
}

impl TwilioAuth {
    pub fn new(store: Store, metrics: Arc<Metrics>, refresh: Duration) -> Self {
        Self {
            store,
            metrics,
            refresh,
            cache: RwLock::new(Cache {
                creds: Vec::new(),
                fingerprint: None,
                generation: None,
                checked_at: None,
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
        self.find(|c| signature::validate(c.auth_token.expose(), url, params, header))
            .await
    }

    /// The tenant a Twilio account SID belongs to.
    pub async fn for_account(
        &self,
        account_sid: &str,
    ) -> Result<Option<TwilioCredentials>, StoreError> {
        self.find(|c| c.account_sid == account_sid).await
    }

    /// Makes the next look-up reload every tenant's credentials.
    pub async fn invalidate(&self) {
        self.cache.write().await.generation = None;
    }

    async fn find(
        &self,
        matches: impl Fn(&TwilioCredentials) -> bool,
    ) -> Result<Option<TwilioCredentials>, StoreError> {
        let find = |creds: &[TwilioCredentials]| creds.iter().find(|c| matches(c)).cloned();
        {
            let cache = self.cache.read().await;
            if cache.generation == Some(self.store.tenants_generation()) {
                if let Some(found) = find(&cache.creds) {
                    return Ok(Some(found));
                }
                if cache
                    .checked_at
                    .is_some_and(|at| at.elapsed() < self.refresh)
                {
                    return Ok(None);
                }
            }
        }
        let mut cache = self.cache.write().await;
        // Someone else may have refreshed while we waited for the lock.
        let generation = self.store.tenants_generation();
        let stale = cache.generation != Some(generation);
        let due = cache
            .checked_at
            .is_none_or(|at| at.elapsed() >= self.refresh);
        if stale || due {
            self.metrics.credential_lookups.inc();
            let fingerprint = self.store.tenants_fingerprint().await?;
            if stale || cache.fingerprint.as_ref() != Some(&fingerprint) {
                cache.creds = self.store.all_twilio_credentials().await?;
                cache.fingerprint = Some(fingerprint);
            }
            cache.generation = Some(generation);
            cache.checked_at = Some(Instant::now());
        }
        Ok(find(&cache.creds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::store::testing;

    #[tokio::test]
    async fn misses_ask_the_database_once_per_interval_and_changes_show_at_once() {
        let store = testing::sqlite().await;
        let metrics = Arc::new(Metrics::new());
        let auth = TwilioAuth::new(
            store.store.clone(),
            metrics.clone(),
            Duration::from_secs(3600),
        );
        for _ in 0..500 {
            assert!(auth.for_account("ACnobody").await.unwrap().is_none());
        }
        assert_eq!(metrics.credential_lookups.get(), 1);
        // A tenant added through this store is seen without waiting.
        let t = store
            .store
            .create_tenant("A", Some(("AC1", &Secret::new("tok"))))
            .await
            .unwrap();
        let found = auth.for_account("AC1").await.unwrap().unwrap();
        assert_eq!(found.tenant_id, t.id);
        assert_eq!(metrics.credential_lookups.get(), 2);
        for _ in 0..100 {
            assert!(auth.for_account("AC1").await.unwrap().is_some());
            assert!(auth.for_account("ACnobody").await.unwrap().is_none());
        }
        assert_eq!(metrics.credential_lookups.get(), 2);
        auth.invalidate().await;
        assert!(auth.for_account("AC1").await.unwrap().is_some());
        assert_eq!(metrics.credential_lookups.get(), 3);
    }
}
