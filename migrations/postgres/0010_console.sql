-- People sign in (issue 11): a password per user (argon2id PHC string, NULL
-- for users who only hold API keys), server-side sessions, and the tenant
-- event stream behind /v1/events.
-- Keep in step with migrations/sqlite/0010_console.sql: the repository code is shared.

ALTER TABLE users ADD COLUMN password_hash TEXT;

-- A browser session. Only the SHA-256 of the random cookie value is stored,
-- so a copy of the database signs nobody in. Idle expiry reads last_seen_at;
-- expires_at is the absolute end.
CREATE TABLE sessions (
    id_hash      TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    user_id      TEXT NOT NULL REFERENCES users(id),
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);

-- The last event id handed out per tenant: ids increase per tenant, so a
-- client resumes with Last-Event-ID without seeing other tenants' numbering.
CREATE TABLE event_sequences (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants(id),
    last_id   BIGINT NOT NULL
);

-- Tenant events (call.*, transcript.ready, recording.ready), kept bounded by
-- count and age (config [events]). data is a small JSON object of ids.
CREATE TABLE events (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    id         BIGINT NOT NULL,
    type       TEXT NOT NULL,
    call_id    TEXT,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
