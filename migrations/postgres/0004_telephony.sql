-- Telephony control plane: numbers bought through the API, ordered call
-- status callbacks, deduplicated webhooks, and stream intervals for usage.
-- Keep in step with the other dialect's 0004_telephony.sql: the repository code is shared.

ALTER TABLE phone_numbers ADD COLUMN friendly_name TEXT;
-- Routing an inbound call: the tenant's live row for the dialled number.
CREATE INDEX phone_numbers_tenant_number ON phone_numbers (tenant_id, number);

-- The highest provider SequenceNumber applied to the call, so a callback
-- that arrives late cannot move the call backwards.
ALTER TABLE calls ADD COLUMN status_sequence BIGINT;

-- Every webhook delivery we acted on, by a key equal for redeliveries of the
-- same event (see providers::StatusEvent::dedup_key); a second delivery finds
-- its key taken and changes nothing.
CREATE TABLE webhook_deliveries (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    provider          TEXT NOT NULL,
    dedup_key         TEXT NOT NULL,
    idempotency_token TEXT,
    kind              TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    UNIQUE (tenant_id, provider, dedup_key)
);

-- One row per media stream, open while ended_at is NULL: the concurrent
-- stream peak of the usage report comes from these intervals.
CREATE TABLE stream_usage (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    call_id    TEXT NOT NULL REFERENCES calls(id),
    started_at BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX stream_usage_tenant ON stream_usage (tenant_id, started_at);
