-- The per-call data policy (record, live transcription, PII redaction,
-- consent, retention), pinned from the tenant's settings when the call
-- starts; JSON (src/store/policy.rs). retention_days repeats the policy's
-- value so the retention sweep can select by it in SQL.
-- Keep in step with the other dialect's 0008_call_policy.sql.
ALTER TABLE calls ADD COLUMN policy TEXT;
ALTER TABLE calls ADD COLUMN retention_days BIGINT;
