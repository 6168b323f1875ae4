-- CRM link: customers (with their phone numbers, unique per tenant so a call
-- matches at most one), tickets, and the call record fields agents edit.
-- Keep in step with migrations/sqlite/0005_crm.sql: the repository code is shared.

CREATE TABLE customers (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    email      TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX customers_tenant ON customers (tenant_id, id);

-- Normalised E.164; a number names one customer within a tenant.
CREATE TABLE customer_phone_numbers (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    customer_id TEXT NOT NULL REFERENCES customers(id),
    number      TEXT NOT NULL,
    position    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, number)
);
CREATE INDEX customer_phone_numbers_customer ON customer_phone_numbers (tenant_id, customer_id);

CREATE TABLE tickets (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    subject        TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('open', 'pending', 'closed')),
    description    TEXT,
    customer_id    TEXT REFERENCES customers(id),
    call_id        TEXT REFERENCES calls(id),
    transcript_url TEXT,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX tickets_tenant ON tickets (tenant_id, id);

ALTER TABLE calls ADD COLUMN customer_id TEXT REFERENCES customers(id);
ALTER TABLE calls ADD COLUMN ticket_id TEXT REFERENCES tickets(id);
ALTER TABLE calls ADD COLUMN assigned_user_id TEXT REFERENCES users(id);
ALTER TABLE calls ADD COLUMN disposition TEXT;
ALTER TABLE calls ADD COLUMN notes TEXT;
-- Twilio conference (CF…) the call's leg sits in; hold and mute act on it.
ALTER TABLE calls ADD COLUMN conference_sid TEXT;
