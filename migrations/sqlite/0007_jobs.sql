-- Durable background jobs (transcription, provider recording fetch).
-- Keep in step with the other dialect's 0007_jobs.sql: the repository code is shared.
--
-- A worker claims a job by a conditional UPDATE (queued and due, or running
-- with an expired lease) that sets lease_owner/lease_expires_at; only the
-- lease holder may finish it. A dead worker's job is claimed again once its
-- lease expires.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    -- Same key, same tenant and kind: the same job (webhook retries).
    dedup_key        TEXT,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    run_after        BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    progress         DOUBLE PRECISION NOT NULL DEFAULT 0,
    error            TEXT,
    result           TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (status, run_after);
CREATE INDEX jobs_tenant ON jobs (tenant_id, created_at);
CREATE UNIQUE INDEX jobs_dedup ON jobs (tenant_id, kind, dedup_key) WHERE dedup_key IS NOT NULL;

-- Where a transcript came from: live captioning or a batch job.
ALTER TABLE transcripts ADD COLUMN source TEXT NOT NULL DEFAULT 'live'
    CHECK (source IN ('live', 'batch'));
