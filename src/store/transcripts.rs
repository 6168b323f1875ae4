//! Transcripts of calls and their final segments.

use sqlx::Row;

use super::{get_enum, new_id, text_enum, Result, Store, StoreError};

text_enum! {
    pub enum TranscriptStatus {
        Live => "live",
        Processing => "processing",
        Completed => "completed",
        Failed => "failed",
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Transcript {
    pub id: String,
    pub call_id: Option<String>,
    pub status: TranscriptStatus,
    pub model: Option<String>,
    /// JSON summary, written when the call ends.
    pub summary: Option<serde_json::Value>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
}

/// One immutable piece of a transcript.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Segment {
    pub track: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: String,
    pub confidence: Option<f64>,
}

impl Store {
    /// Opens a transcript for a call and links it from the call row.
    pub async fn create_call_transcript(
        &self,
        tenant_id: &str,
        call_id: &str,
        status: TranscriptStatus,
        model: &str,
        now: i64,
    ) -> Result<String> {
        let id = new_id();
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO transcripts (id, tenant_id, call_id, status, model, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(call_id)
        .bind(status.as_str())
        .bind(model)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE calls SET transcript_id = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(&id)
        .bind(now)
        .bind(tenant_id)
        .bind(call_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn add_transcript_segment(
        &self,
        tenant_id: &str,
        transcript_id: &str,
        seg: &Segment,
        now: i64,
    ) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO transcript_segments (id, tenant_id, transcript_id, track, start_ms, end_ms, \
             text, confidence, is_final, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9)",
        )
        .bind(new_id())
        .bind(tenant_id)
        .bind(transcript_id)
        .bind(&seg.track)
        .bind(seg.start_ms)
        .bind(seg.end_ms)
        .bind(&seg.text)
        .bind(seg.confidence)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Marks a transcript complete (or failed) and stores its summary.
    pub async fn finish_transcript(
        &self,
        tenant_id: &str,
        transcript_id: &str,
        status: TranscriptStatus,
        summary: Option<&serde_json::Value>,
        now: i64,
    ) -> Result<()> {
        let _writer = self.writer().await;
        let call_id: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE transcripts SET status = $1, summary = $2, completed_at = $3 \
             WHERE tenant_id = $4 AND id = $5 RETURNING call_id",
        )
        .bind(status.as_str())
        .bind(summary.map(|s| s.to_string()))
        .bind(now)
        .bind(tenant_id)
        .bind(transcript_id)
        .fetch_optional(self.pool())
        .await?;
        if let (Some(call_id), TranscriptStatus::Completed) = (call_id, status) {
            self.publish_transcript_ready(
                tenant_id,
                transcript_id,
                call_id.as_deref(),
                "live",
                now,
            )
            .await;
        }
        Ok(())
    }

    /// `transcript.ready` (the writer guard is held).
    pub(super) async fn publish_transcript_ready(
        &self,
        tenant_id: &str,
        transcript_id: &str,
        call_id: Option<&str>,
        source: &str,
        now: i64,
    ) {
        let data = serde_json::json!({
            "transcript_id": transcript_id, "call_id": call_id, "source": source,
        });
        self.publish_locked(
            tenant_id,
            super::EventType::TranscriptReady,
            call_id,
            data,
            now,
        )
        .await;
    }

    pub async fn get_transcript(&self, tenant_id: &str, transcript_id: &str) -> Result<Transcript> {
        let row = sqlx::query(
            "SELECT id, call_id, status, model, summary, created_at, completed_at FROM transcripts \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(transcript_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        let summary: Option<String> = row.try_get("summary")?;
        Ok(Transcript {
            id: row.try_get("id")?,
            call_id: row.try_get("call_id")?,
            status: get_enum(&row, "status")?,
            model: row.try_get("model")?,
            summary: summary
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|_| StoreError::Corrupt("transcript summary".into()))?,
            created_at: row.try_get("created_at")?,
            completed_at: row.try_get("completed_at")?,
        })
    }

    /// Final segments in call order.
    pub async fn list_transcript_segments(
        &self,
        tenant_id: &str,
        transcript_id: &str,
    ) -> Result<Vec<Segment>> {
        let rows = sqlx::query(
            "SELECT track, start_ms, end_ms, text, confidence FROM transcript_segments \
             WHERE tenant_id = $1 AND transcript_id = $2 AND is_final = 1 \
             ORDER BY start_ms, track, id",
        )
        .bind(tenant_id)
        .bind(transcript_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Segment {
                    track: r.try_get("track")?,
                    start_ms: r.try_get("start_ms")?,
                    end_ms: r.try_get("end_ms")?,
                    text: r.try_get("text")?,
                    confidence: r.try_get("confidence")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[tokio::test]
    async fn segments_belong_to_their_tenant() {
        for store in testing::stores().await {
            let a = store.create_tenant("A", None).await.unwrap();
            let b = store.create_tenant("B", None).await.unwrap();
            let call = store
                .start_stream_call(&a.id, &crate::store::testing::stream_call("CA1", "MZ1"), 1)
                .await
                .unwrap();
            let t = store
                .create_call_transcript(&a.id, &call.id, TranscriptStatus::Live, "tiny.en", 2)
                .await
                .unwrap();
            assert_eq!(
                store
                    .get_call(&a.id, &call.id)
                    .await
                    .unwrap()
                    .transcript_id
                    .as_deref(),
                Some(t.as_str())
            );
            for (i, text) in ["hello", "world"].iter().enumerate() {
                let seg = Segment {
                    track: "caller".into(),
                    start_ms: 1000 * (2 - i as i64),
                    end_ms: 1000 * (3 - i as i64),
                    text: text.to_string(),
                    confidence: Some(0.5),
                };
                store
                    .add_transcript_segment(&a.id, &t, &seg, 3)
                    .await
                    .unwrap();
            }
            let segs = store.list_transcript_segments(&a.id, &t).await.unwrap();
            assert_eq!(
                segs.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
                ["world", "hello"]
            );
            assert!(store
                .list_transcript_segments(&b.id, &t)
                .await
                .unwrap()
                .is_empty());
            assert!(matches!(
                store.get_transcript(&b.id, &t).await,
                Err(StoreError::NotFound)
            ));
            let summary = serde_json::json!({"reason": "x"});
            store
                .finish_transcript(&a.id, &t, TranscriptStatus::Completed, Some(&summary), 4)
                .await
                .unwrap();
            let got = store.get_transcript(&a.id, &t).await.unwrap();
            assert_eq!(got.status, TranscriptStatus::Completed);
            assert_eq!(got.summary, Some(summary));
        }
    }
}
