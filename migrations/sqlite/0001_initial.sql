-- callstream initial schema (SQLite). Timestamps are milliseconds since the Unix epoch;
-- ids are UUIDv7 text. Every row carries its tenant so every query can be tenant-scoped.
-- Keep in step with migrations/postgres/0001_initial.sql: the repository code is shared.

CREATE TABLE tenants (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    twilio_account_sid TEXT UNIQUE,
    twilio_auth_token  TEXT,
    settings           TEXT NOT NULL DEFAULT '{}',
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'supervisor', 'agent')),
    key_prefix   TEXT NOT NULL UNIQUE,
    key_hash     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE phone_numbers (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    number      TEXT NOT NULL CHECK (number GLOB '+[1-9]*'),
    provider    TEXT NOT NULL CHECK (provider IN ('twilio', 'telnyx', 'vonage', 'plivo')),
    external_id TEXT,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'active', 'releasing', 'released', 'failed')),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX phone_numbers_tenant ON phone_numbers (tenant_id);
CREATE UNIQUE INDEX phone_numbers_live_number ON phone_numbers (number) WHERE status <> 'released';

CREATE TABLE calls (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    direction        TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    status           TEXT NOT NULL CHECK (status IN ('queued', 'ringing', 'in_progress', 'completed',
                         'busy', 'failed', 'no_answer', 'canceled', 'interrupted')),
    from_number      TEXT,
    to_number        TEXT,
    provider         TEXT NOT NULL CHECK (provider IN ('twilio', 'telnyx', 'vonage', 'plivo')),
    external_call_id TEXT NOT NULL,
    stream_id        TEXT,
    started_at       BIGINT,
    answered_at      BIGINT,
    ended_at         BIGINT,
    duration_ms      BIGINT,
    recording_id     TEXT,
    transcript_id    TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (tenant_id, provider, external_call_id)
);
CREATE INDEX calls_tenant_created ON calls (tenant_id, created_at, id);
CREATE INDEX calls_open ON calls (status) WHERE status = 'in_progress';

CREATE TABLE call_logs (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    call_id    TEXT NOT NULL REFERENCES calls(id),
    event      TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);
CREATE INDEX call_logs_call ON call_logs (tenant_id, call_id, created_at, id);

CREATE TABLE recordings (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    call_id      TEXT REFERENCES calls(id),
    status       TEXT NOT NULL CHECK (status IN ('recording', 'completed', 'interrupted', 'failed', 'deleted')),
    storage_path TEXT,
    format       TEXT NOT NULL,
    channels     INTEGER NOT NULL,
    sample_rate  INTEGER NOT NULL,
    duration_ms  BIGINT,
    bytes        BIGINT,
    key_id       TEXT,
    algorithm    TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT
);
CREATE INDEX recordings_tenant ON recordings (tenant_id, created_at);

CREATE TABLE transcripts (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    call_id      TEXT REFERENCES calls(id),
    status       TEXT NOT NULL CHECK (status IN ('live', 'processing', 'completed', 'failed')),
    language     TEXT,
    model        TEXT,
    summary      TEXT,
    created_at   BIGINT NOT NULL,
    completed_at BIGINT
);
CREATE INDEX transcripts_tenant ON transcripts (tenant_id, created_at);

CREATE TABLE transcript_segments (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    transcript_id TEXT NOT NULL REFERENCES transcripts(id),
    track         TEXT NOT NULL CHECK (track IN ('caller', 'agent')),
    start_ms      BIGINT NOT NULL,
    end_ms        BIGINT NOT NULL,
    text          TEXT NOT NULL,
    confidence    DOUBLE PRECISION,
    is_final      INTEGER NOT NULL CHECK (is_final IN (0, 1)),
    created_at    BIGINT NOT NULL
);
CREATE INDEX transcript_segments_transcript ON transcript_segments (tenant_id, transcript_id, start_ms);
