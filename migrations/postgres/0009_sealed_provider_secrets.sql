-- Provider secrets (tenants.twilio_auth_token) are stored sealed by the
-- master key named here, as recording keys are (src/secret.rs). NULL marks a
-- row written before sealing: its token is plaintext until the next start
-- with a master key seals it (Store::with_master_key).
-- Keep in step with the other dialect's 0009_sealed_provider_secrets.sql.
ALTER TABLE tenants ADD COLUMN secrets_master_key_id TEXT;
