-- Users: the people (or integrations) of a tenant. A user has one role; API
-- keys belong to a user and act with the user's current role, so changing or
-- disabling a user takes effect on every key at once.
-- Keep in step with migrations/sqlite/0003_users.sql: the repository code is shared.

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    email       TEXT,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'supervisor', 'agent')),
    created_at  BIGINT NOT NULL,
    disabled_at BIGINT
);
CREATE INDEX users_tenant ON users (tenant_id, created_at, id);
CREATE UNIQUE INDEX users_tenant_email ON users (tenant_id, email) WHERE email IS NOT NULL;

ALTER TABLE api_keys ADD COLUMN user_id TEXT REFERENCES users(id);

-- Keys made before users existed: one user per key, same id, name and role,
-- so they keep working exactly as before.
INSERT INTO users (id, tenant_id, name, email, role, created_at, disabled_at)
    SELECT id, tenant_id, name, NULL, role, created_at, NULL FROM api_keys;
UPDATE api_keys SET user_id = id WHERE user_id IS NULL;

CREATE INDEX api_keys_user ON api_keys (tenant_id, user_id);
