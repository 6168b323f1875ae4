//! Durable jobs: enqueue, claim with a lease, finish, retry, fail; and the
//! few writes job handlers need to be idempotent (a batch transcript whose
//! id is fixed by its job, calls found by the provider's id).
//!
//! Claiming is one conditional UPDATE (`… WHERE id = $ AND (queued and due
//! OR running with an expired lease)`): on SQLite writes are serialised, on
//! PostgreSQL a second concurrent UPDATE of the row re-checks the WHERE
//! against the winner's version and matches nothing, so two workers never
//! hold the same job. Every later write by a worker names its lease owner,
//! so a worker whose lease expired cannot overwrite its successor.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::calls::{call_from_row, CALL_COLUMNS};
use super::{get_enum, new_id, text_enum, Call, Result, Segment, Store, StoreError};

text_enum! {
    pub enum JobStatus {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
    }
}

/// One job row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Job {
    pub id: String,
    pub tenant_id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub status: JobStatus,
    /// Claims so far (the running one included).
    pub attempts: i64,
    pub max_attempts: i64,
    /// Not claimed before this time (unix ms): the retry backoff.
    pub run_after: i64,
    #[serde(skip)]
    pub lease_owner: Option<String>,
    #[serde(skip)]
    pub lease_expires_at: Option<i64>,
    /// 0.0 to 1.0, as the handler reports it.
    pub progress: f64,
    /// The last attempt's error.
    pub error: Option<String>,
    pub result: Option<serde_json::Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub payload: &'a serde_json::Value,
    pub max_attempts: u32,
    /// Enqueueing the same (tenant, kind, key) again returns the first job.
    pub dedup_key: Option<&'a str>,
    /// Earliest start (unix ms); `None` for now.
    pub run_after: Option<i64>,
}

/// A finished batch transcript, as [`Store::store_batch_transcript`] stores it.
#[derive(Debug, Clone)]
pub struct BatchTranscript<'a> {
    /// The transcript's id (the job's, so a re-run finds it).
    pub id: &'a str,
    pub call_id: &'a str,
    pub model: &'a str,
    pub segments: &'a [Segment],
    /// The call summary from these segments.
    pub summary: &'a serde_json::Value,
}

/// Jobs counted by kind and status (queue depth for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub kind: String,
    pub status: JobStatus,
    pub count: i64,
}

const JOB_COLUMNS: &str = "id, tenant_id, kind, payload, status, attempts, max_attempts, \
     run_after, lease_owner, lease_expires_at, progress, error, result, created_at, updated_at";

fn job_from_row(row: &AnyRow) -> Result<Job> {
    let payload: String = row.try_get("payload")?;
    let result: Option<String> = row.try_get("result")?;
    Ok(Job {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        kind: row.try_get("kind")?,
        payload: serde_json::from_str(&payload)
            .map_err(|_| StoreError::Corrupt("job payload".into()))?,
        status: get_enum(row, "status")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        run_after: row.try_get("run_after")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        progress: row.try_get("progress")?,
        error: row.try_get("error")?,
        result: result
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|_| StoreError::Corrupt("job result".into()))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Due: queued and its backoff over, or running under an expired lease.
const CLAIMABLE: &str = "((status = 'queued' AND run_after <= $1) \
     OR (status = 'running' AND lease_expires_at < $1))";

impl Store {
    /// Queues a job (or, with a dedup key already used, returns that job).
    pub async fn enqueue_job(&self, tenant_id: &str, job: &NewJob<'_>, now: i64) -> Result<Job> {
        let id = new_id();
        {
            let _writer = self.writer().await;
            sqlx::query(
                "INSERT INTO jobs (id, tenant_id, kind, payload, dedup_key, status, attempts, \
                 max_attempts, run_after, progress, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, 0, $8, $8) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&id)
            .bind(tenant_id)
            .bind(job.kind)
            .bind(job.payload.to_string())
            .bind(job.dedup_key)
            .bind(i64::from(job.max_attempts.max(1)))
            .bind(job.run_after.unwrap_or(now))
            .bind(now)
            .execute(self.pool())
            .await?;
        }
        match job.dedup_key {
            Some(key) => {
                let row = sqlx::query(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs \
                     WHERE tenant_id = $1 AND kind = $2 AND dedup_key = $3"
                ))
                .bind(tenant_id)
                .bind(job.kind)
                .bind(key)
                .fetch_optional(self.pool())
                .await?
                .ok_or(StoreError::NotFound)?;
                job_from_row(&row)
            }
            None => self.get_job(tenant_id, &id).await,
        }
    }

    pub async fn get_job(&self, tenant_id: &str, id: &str) -> Result<Job> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        job_from_row(&row)
    }

    /// Claims the next due job of one of `kinds` for `owner` until
    /// `now + lease_ms`, counting an attempt. `None` when nothing is due.
    pub async fn claim_job(
        &self,
        kinds: &[&str],
        owner: &str,
        lease_ms: i64,
        now: i64,
    ) -> Result<Option<Job>> {
        if kinds.is_empty() {
            return Ok(None);
        }
        let placeholders: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 2)).collect();
        let select = format!(
            "SELECT id FROM jobs WHERE {CLAIMABLE} AND kind IN ({}) \
             ORDER BY run_after, id LIMIT 8",
            placeholders.join(", ")
        );
        // A few rounds: candidates taken by other workers between our
        // SELECT and UPDATE do not mean the queue is empty.
        for _ in 0..4 {
            let mut q = sqlx::query_scalar::<_, String>(&select).bind(now);
            for kind in kinds {
                q = q.bind(*kind);
            }
            let candidates = q.fetch_all(self.pool()).await?;
            if candidates.is_empty() {
                return Ok(None);
            }
            if let Some(job) = self.try_claim(&candidates, owner, lease_ms, now).await? {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    async fn try_claim(
        &self,
        candidates: &[String],
        owner: &str,
        lease_ms: i64,
        now: i64,
    ) -> Result<Option<Job>> {
        for id in candidates {
            let claimed = {
                let _writer = self.writer().await;
                sqlx::query(&format!(
                    "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
                     lease_owner = $2, lease_expires_at = $3, updated_at = $1 \
                     WHERE id = $4 AND {CLAIMABLE}"
                ))
                .bind(now)
                .bind(owner)
                .bind(now + lease_ms)
                .bind(id)
                .execute(self.pool())
                .await?
                .rows_affected()
                    == 1
            };
            if claimed {
                let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
                    .bind(id)
                    .fetch_one(self.pool())
                    .await?;
                return Ok(Some(job_from_row(&row)?));
            }
        }
        Ok(None)
    }

    /// Extends the lease and records progress; `false` when the lease was
    /// lost (expired and taken by another worker): stop working on it.
    pub async fn heartbeat_job(
        &self,
        id: &str,
        owner: &str,
        progress: Option<f64>,
        lease_expires_at: i64,
        now: i64,
    ) -> Result<bool> {
        let _writer = self.writer().await;
        let n = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1, progress = COALESCE($2, progress), \
             updated_at = $3 WHERE id = $4 AND lease_owner = $5 AND status = 'running'",
        )
        .bind(lease_expires_at)
        .bind(progress.map(|p| p.clamp(0.0, 1.0)))
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Marks a job done with its result; `false` when the lease was lost.
    pub async fn complete_job(
        &self,
        id: &str,
        owner: &str,
        result: &serde_json::Value,
        now: i64,
    ) -> Result<bool> {
        let _writer = self.writer().await;
        let n = sqlx::query(
            "UPDATE jobs SET status = 'succeeded', result = $1, progress = 1, error = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
             WHERE id = $3 AND lease_owner = $4 AND status = 'running'",
        )
        .bind(result.to_string())
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Puts a job back in the queue until `run_after` (backoff), recording
    /// the error; `false` when the lease was lost.
    pub async fn retry_job(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        run_after: i64,
        now: i64,
    ) -> Result<bool> {
        let _writer = self.writer().await;
        let n = sqlx::query(
            "UPDATE jobs SET status = 'queued', error = $1, run_after = $2, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $3 \
             WHERE id = $4 AND lease_owner = $5 AND status = 'running'",
        )
        .bind(error)
        .bind(run_after)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Fails a job for good, recording the error; `false` when the lease
    /// was lost.
    pub async fn fail_job(&self, id: &str, owner: &str, error: &str, now: i64) -> Result<bool> {
        let _writer = self.writer().await;
        let n = sqlx::query(
            "UPDATE jobs SET status = 'failed', error = $1, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $2 \
             WHERE id = $3 AND lease_owner = $4 AND status = 'running'",
        )
        .bind(error)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Unfinished jobs by kind and status (all tenants: for metrics only).
    pub async fn count_open_jobs(&self) -> Result<Vec<JobCount>> {
        let rows = sqlx::query(
            "SELECT kind, status, COUNT(*) AS n FROM jobs \
             WHERE status IN ('queued', 'running') GROUP BY kind, status",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(JobCount {
                    kind: r.try_get("kind")?,
                    status: get_enum(r, "status")?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }

    /// The tenant's call with the provider's call id (Twilio `CallSid`).
    pub async fn find_call_by_external_id(
        &self,
        tenant_id: &str,
        provider: &str,
        external_call_id: &str,
    ) -> Result<Option<Call>> {
        let row = sqlx::query(&format!(
            "SELECT {CALL_COLUMNS} FROM calls \
             WHERE tenant_id = $1 AND provider = $2 AND external_call_id = $3"
        ))
        .bind(tenant_id)
        .bind(provider)
        .bind(external_call_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(call_from_row).transpose()
    }

    /// Stores a finished batch transcript under a caller-chosen id with all
    /// its segments, and makes it the call's transcript, in one
    /// transaction. Returns `false` (and writes nothing) when a transcript
    /// with that id exists: a re-run job must not store a second one.
    pub async fn store_batch_transcript(
        &self,
        tenant_id: &str,
        t: &BatchTranscript<'_>,
        now: i64,
    ) -> Result<bool> {
        let (transcript_id, call_id, segments) = (t.id, t.call_id, t.segments);
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO transcripts (id, tenant_id, call_id, status, model, source, summary, \
             created_at, completed_at) VALUES ($1, $2, $3, 'completed', $4, 'batch', $5, $6, $6) \
             ON CONFLICT DO NOTHING",
        )
        .bind(transcript_id)
        .bind(tenant_id)
        .bind(call_id)
        .bind(t.model)
        .bind(t.summary.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        for seg in segments {
            sqlx::query(
                "INSERT INTO transcript_segments (id, tenant_id, transcript_id, track, start_ms, \
                 end_ms, text, confidence, is_final, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9)",
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
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE calls SET transcript_id = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(transcript_id)
        .bind(now)
        .bind(tenant_id)
        .bind(call_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.publish_transcript_ready(tenant_id, transcript_id, Some(call_id), "batch", now)
            .await;
        Ok(true)
    }

    /// How many transcripts the call has (idempotency tests).
    pub async fn count_call_transcripts(&self, tenant_id: &str, call_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM transcripts WHERE tenant_id = $1 AND call_id = $2",
        )
        .bind(tenant_id)
        .bind(call_id)
        .fetch_one(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    fn job<'a>(payload: &'a serde_json::Value, key: Option<&'a str>) -> NewJob<'a> {
        NewJob {
            kind: "k",
            payload,
            max_attempts: 3,
            dedup_key: key,
            run_after: None,
        }
    }

    #[tokio::test]
    async fn claim_lease_and_reclaim_on_both_databases() {
        for store in testing::stores().await {
            let t = store.create_tenant("A", None).await.unwrap();
            let other = store.create_tenant("B", None).await.unwrap();
            let p = serde_json::json!({"x": 1});
            let j = store.enqueue_job(&t.id, &job(&p, None), 100).await.unwrap();
            assert_eq!(j.status, JobStatus::Queued);
            assert!(matches!(
                store.get_job(&other.id, &j.id).await,
                Err(StoreError::NotFound)
            ));
            // Another kind is not claimed.
            assert!(store
                .claim_job(&["z"], "w1", 1000, 100)
                .await
                .unwrap()
                .is_none());
            let c = store
                .claim_job(&["k"], "w1", 1000, 100)
                .await
                .unwrap()
                .unwrap();
            assert_eq!((c.id.as_str(), c.attempts), (j.id.as_str(), 1));
            assert_eq!(c.payload, p);
            // Held: nobody else gets it while the lease runs.
            assert!(store
                .claim_job(&["k"], "w2", 1000, 500)
                .await
                .unwrap()
                .is_none());
            // Lease expired (w1 died): w2 takes it; w1 can no longer write.
            let c2 = store
                .claim_job(&["k"], "w2", 1000, 1101)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(c2.attempts, 2);
            assert!(!store
                .heartbeat_job(&j.id, "w1", Some(0.5), 5000, 1102)
                .await
                .unwrap());
            assert!(!store.complete_job(&j.id, "w1", &p, 1103).await.unwrap());
            assert!(store
                .heartbeat_job(&j.id, "w2", Some(0.5), 5000, 1104)
                .await
                .unwrap());
            // Retry with backoff: not due before run_after.
            assert!(store
                .retry_job(&j.id, "w2", "boom", 3000, 1200)
                .await
                .unwrap());
            assert!(store
                .claim_job(&["k"], "w3", 1000, 2999)
                .await
                .unwrap()
                .is_none());
            let c3 = store
                .claim_job(&["k"], "w3", 1000, 3000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(c3.error.as_deref(), Some("boom"));
            assert!(store.complete_job(&j.id, "w3", &p, 3001).await.unwrap());
            let done = store.get_job(&t.id, &j.id).await.unwrap();
            assert_eq!(done.status, JobStatus::Succeeded);
            assert_eq!(done.result, Some(p.clone()));
            assert!(store
                .claim_job(&["k"], "w4", 1000, 999_999)
                .await
                .unwrap()
                .is_none());

            // Dedup key: the same job twice.
            let a = store
                .enqueue_job(&t.id, &job(&p, Some("RE1")), 1)
                .await
                .unwrap();
            let b = store
                .enqueue_job(&t.id, &job(&p, Some("RE1")), 2)
                .await
                .unwrap();
            assert_eq!(a.id, b.id);
            let c = store
                .enqueue_job(&other.id, &job(&p, Some("RE1")), 2)
                .await
                .unwrap();
            assert_ne!(a.id, c.id);
            let depth = store.count_open_jobs().await.unwrap();
            assert_eq!(depth.iter().map(|d| d.count).sum::<i64>(), 2);
        }
    }

    #[tokio::test]
    async fn concurrent_claims_never_share_a_job() {
        for store in testing::stores().await {
            let t = store.create_tenant("A", None).await.unwrap();
            let p = serde_json::json!({});
            for _ in 0..20 {
                store.enqueue_job(&t.id, &job(&p, None), 1).await.unwrap();
            }
            let mut tasks = Vec::new();
            for w in 0..4 {
                let store = store.store.clone();
                tasks.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(j) = store
                        .claim_job(&["k"], &format!("w{w}"), 60_000, 2)
                        .await
                        .unwrap()
                    {
                        got.push(j.id);
                    }
                    got
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            let n = all.len();
            all.sort();
            all.dedup();
            assert_eq!((n, all.len()), (20, 20));
        }
    }
}
