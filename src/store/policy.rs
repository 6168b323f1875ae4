//! The per-call data policy: what the tenant's settings said about a call
//! when it started (record it, caption it live, redact PII, what consent
//! was announced, how long to keep it), pinned on the call row so every
//! path that produces or serves the call's data obeys the same answer.
//!
//! When settings change, calls already in progress keep the policy they
//! started with: the caller heard one consent announcement, so the call is
//! recorded (or not) and captioned (or not) to its end as announced.
//! Paths that run after the call (provider recording fetch, batch
//! re-transcription, transcript export, stored captions, retention) take
//! the pinned policy *tightened* by the tenant's current settings
//! ([`CallPolicy::after_call`]): turning recording off stops new audio from
//! being stored, turning redaction on redacts what is stored or served
//! from then on, and a shorter retention applies to old calls too. Nothing
//! a later change does loosens what a call was promised.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{Result, Store, StoreError, TenantSettings};

/// A call's policy (see the module docs). Stored as JSON on `calls.policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallPolicy {
    /// Audio of the call may be stored (our stream recording, the
    /// provider's recording).
    pub record: bool,
    /// The call is transcribed while it streams: captions, finals, summary.
    pub transcribe_live: bool,
    /// Transcript text is redacted before it is stored or served.
    pub pii_redaction: bool,
    /// What callers were told before being connected, if anything.
    pub consent_announcement: Option<String>,
    /// Days the call's recording and transcript are kept; `None` keeps them.
    pub retention_days: Option<u32>,
    /// When the policy was resolved (ms since the epoch).
    pub resolved_at: i64,
}

impl CallPolicy {
    /// The policy a call starting now gets from the tenant's settings.
    pub fn from_settings(settings: &TenantSettings, now: i64) -> Self {
        Self {
            record: settings.record_calls,
            transcribe_live: settings.transcribe_live,
            pii_redaction: settings.pii_redaction,
            consent_announcement: settings.consent_announcement.clone(),
            retention_days: settings.retention_days,
            resolved_at: now,
        }
    }

    /// The policy for work done after the call: the pinned one, tightened
    /// by the tenant's `current` settings (never loosened).
    pub fn after_call(&self, current: &TenantSettings) -> Self {
        let retention_days = match (self.retention_days, current.retention_days) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Self {
            record: self.record && current.record_calls,
            // Live transcription is over once the call is.
            transcribe_live: false,
            pii_redaction: self.pii_redaction || current.pii_redaction,
            consent_announcement: self.consent_announcement.clone(),
            retention_days,
            resolved_at: self.resolved_at,
        }
    }

    /// Transcript text as it may be stored or served under this policy.
    /// Every path that stores or serves final transcript text goes through
    /// here (live finals, batch re-transcription, exports, stored captions).
    pub fn transcript_text(&self, text: &str) -> String {
        if self.pii_redaction {
            crate::transcript::redact::redact(text).text
        } else {
            text.to_string()
        }
    }
}

/// Every path that produces or serves a call's data: what the settings
/// matrix (tests/settings_matrix.rs) checks each setting against, and the
/// columns of the README's settings table. A new path goes here first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataPath {
    /// The voice webhook's answer (consent, stream) and outbound calls.
    CallAnswer,
    /// Our encrypted recording of the media stream.
    StreamRecording,
    /// The provider's own recording, downloaded by a fetch job.
    ProviderRecording,
    /// Partials and finals pushed to watchers during the call.
    LiveCaptions,
    /// Final segments and summary stored during the call.
    LiveTranscript,
    /// Batch re-transcription of the stored recording (a job).
    BatchTranscript,
    /// Transcript export and the finals served to watchers after the call.
    TranscriptExport,
    /// The retention sweep.
    Retention,
}

impl DataPath {
    pub const ALL: [DataPath; 8] = [
        DataPath::CallAnswer,
        DataPath::StreamRecording,
        DataPath::ProviderRecording,
        DataPath::LiveCaptions,
        DataPath::LiveTranscript,
        DataPath::BatchTranscript,
        DataPath::TranscriptExport,
        DataPath::Retention,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataPath::CallAnswer => "call_answer",
            DataPath::StreamRecording => "stream_recording",
            DataPath::ProviderRecording => "provider_recording",
            DataPath::LiveCaptions => "live_captions",
            DataPath::LiveTranscript => "live_transcript",
            DataPath::BatchTranscript => "batch_transcript",
            DataPath::TranscriptExport => "transcript_export",
            DataPath::Retention => "retention",
        }
    }
}

/// Reads a pinned policy column; `None` when the call has none yet.
pub(super) fn parse_policy(raw: Option<String>) -> Result<Option<CallPolicy>> {
    raw.map(|s| serde_json::from_str(&s).map_err(|_| StoreError::Corrupt("call policy".into())))
        .transpose()
}

impl Store {
    /// The call's pinned policy; a call that has none yet (created by a
    /// status callback, or before policies existed) gets one resolved from
    /// the tenant's settings now, and keeps it. Concurrent resolutions
    /// agree: the first one written wins.
    pub async fn call_policy(&self, tenant_id: &str, call_id: &str) -> Result<CallPolicy> {
        if let Some(p) = self.pinned_policy(tenant_id, call_id).await? {
            return Ok(p);
        }
        let settings = self.tenant_settings(tenant_id).await?;
        let policy = CallPolicy::from_settings(&settings, super::now_ms());
        self.pin_call_policy(tenant_id, call_id, &policy).await
    }

    /// Pins `policy` on the call unless it has one already; returns the one
    /// the call now has.
    pub async fn pin_call_policy(
        &self,
        tenant_id: &str,
        call_id: &str,
        policy: &CallPolicy,
    ) -> Result<CallPolicy> {
        let json =
            serde_json::to_string(policy).map_err(|_| StoreError::Corrupt("call policy".into()))?;
        {
            let _writer = self.writer().await;
            sqlx::query(
                "UPDATE calls SET policy = $1, retention_days = $2 \
                 WHERE tenant_id = $3 AND id = $4 AND policy IS NULL",
            )
            .bind(json)
            .bind(policy.retention_days.map(i64::from))
            .bind(tenant_id)
            .bind(call_id)
            .execute(self.pool())
            .await?;
        }
        self.pinned_policy(tenant_id, call_id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// The policy for work on `call` after it ended (or for a provider's
    /// recording of a call we do not know: `None`): its pinned policy, or
    /// one from the settings now if it has none, tightened by the tenant's
    /// current settings. Reads only.
    pub async fn policy_after_call(
        &self,
        tenant_id: &str,
        call: Option<&super::Call>,
    ) -> Result<CallPolicy> {
        let current = self.tenant_settings(tenant_id).await?;
        let pinned = call
            .and_then(|c| c.policy.clone())
            .unwrap_or_else(|| CallPolicy::from_settings(&current, super::now_ms()));
        Ok(pinned.after_call(&current))
    }

    async fn pinned_policy(&self, tenant_id: &str, call_id: &str) -> Result<Option<CallPolicy>> {
        let row = sqlx::query("SELECT policy FROM calls WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(call_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        parse_policy(row.try_get("policy")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[test]
    fn after_call_only_tightens() {
        let pinned = CallPolicy::from_settings(
            &TenantSettings {
                retention_days: Some(30),
                ..TenantSettings::default()
            },
            1,
        );
        // Loosening changes nothing already promised.
        let looser = TenantSettings {
            retention_days: None,
            ..TenantSettings::default()
        };
        let p = pinned.after_call(&looser);
        assert_eq!(p.retention_days, Some(30));
        assert!(p.record && !p.pii_redaction);
        // Tightening applies.
        let stricter = TenantSettings {
            record_calls: false,
            pii_redaction: true,
            retention_days: Some(7),
            ..TenantSettings::default()
        };
        let p = pinned.after_call(&stricter);
        assert_eq!(p.retention_days, Some(7));
        assert!(!p.record && p.pii_redaction);
        // A call pinned without recording stays without.
        let off = CallPolicy {
            record: false,
            ..pinned.clone()
        };
        assert!(!off.after_call(&TenantSettings::default()).record);
        assert_eq!(p.transcript_text("card 4111 1111 1111 1111"), "card [CARD]");
        assert_eq!(
            pinned.transcript_text("4111 1111 1111 1111"),
            "4111 1111 1111 1111"
        );
    }

    #[tokio::test]
    async fn a_call_keeps_the_policy_it_started_with_on_both_databases() {
        for store in testing::stores().await {
            let t = store.create_tenant("A", None).await.unwrap();
            let call = store
                .start_stream_call(&t.id, &testing::stream_call("CA1", "MZ1"), 10)
                .await
                .unwrap();
            assert_eq!(call.policy, None);
            let first = store.call_policy(&t.id, &call.id).await.unwrap();
            assert!(first.record && first.transcribe_live && !first.pii_redaction);
            let off = TenantSettings {
                record_calls: false,
                pii_redaction: true,
                ..TenantSettings::default()
            };
            store.set_tenant_settings(&t.id, &off).await.unwrap();
            // Pinned: the change reaches calls that start after it.
            assert_eq!(store.call_policy(&t.id, &call.id).await.unwrap(), first);
            let again = store
                .pin_call_policy(&t.id, &call.id, &CallPolicy::from_settings(&off, 20))
                .await
                .unwrap();
            assert_eq!(again, first, "the first pinned policy wins");
            let got = store.get_call(&t.id, &call.id).await.unwrap();
            assert_eq!(got.policy.as_ref(), Some(&first));
            // Scoped to the tenant.
            let other = store.create_tenant("B", None).await.unwrap();
            assert!(matches!(
                store.call_policy(&other.id, &call.id).await,
                Err(StoreError::NotFound)
            ));
        }
    }
}
