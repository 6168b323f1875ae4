-- Encrypted call recordings (PostgreSQL). Keep in step with migrations/sqlite/0002_recordings.sql.

-- Per-tenant recording keys (age X25519 identities). The secret is stored only
-- wrapped (XChaCha20-Poly1305) by the master key named by master_key_id, which
-- lives outside the database. One active key per tenant encrypts new
-- recordings; retired keys stay to decrypt older ones (recordings.key_id).
CREATE TABLE recording_keys (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    algorithm      TEXT NOT NULL,
    recipient      TEXT NOT NULL,
    wrapped_secret TEXT NOT NULL,
    master_key_id  TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    created_at     BIGINT NOT NULL,
    retired_at     BIGINT
);
CREATE UNIQUE INDEX recording_keys_one_active ON recording_keys (tenant_id) WHERE status = 'active';
CREATE INDEX recording_keys_tenant ON recording_keys (tenant_id, created_at);

-- Where a recording came from: our stream recorder or the provider's own.
ALTER TABLE recordings ADD COLUMN source TEXT NOT NULL DEFAULT 'stream'
    CHECK (source IN ('stream', 'provider'));
-- Size at rest (ciphertext); `bytes` is the size of the decrypted WAV.
ALTER TABLE recordings ADD COLUMN stored_bytes BIGINT;
-- Startup recovery looks for recordings a dead process left open.
CREATE INDEX recordings_unfinished ON recordings (status) WHERE status = 'recording';
