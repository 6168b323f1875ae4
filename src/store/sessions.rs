//! People signing in: passwords (argon2id) and server-side browser sessions.
//!
//! A session is a random 256-bit token in a cookie; only its SHA-256 is
//! stored, so a copy of the database signs nobody in. A session acts with
//! its user's current role, like an API key, and dies with the user
//! (disabled users' sessions are deleted and never authenticate).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{get_enum, Principal, Result, Store, StoreError, User};
use crate::secret::Secret;

/// Shortest password accepted; longer bounds keep hashing cheap to refuse.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest password accepted (argon2 hashes any length; this bounds the work
/// an attacker can ask for per attempt).
pub const MAX_PASSWORD_BYTES: usize = 256;

/// `Principal::key_id` of a request authenticated by a session: it names no
/// API key.
pub const SESSION_KEY_ID: &str = "session";

/// How often a session's `last_seen_at` is written at most: idle expiry needs
/// minutes of precision, not a write per request.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Why a password was refused before hashing.
pub fn check_password_rules(password: &str) -> std::result::Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    Ok(())
}

/// An argon2id PHC string (random salt, the crate's default cost:
/// m = 19 MiB, t = 2, p = 1, OWASP's recommendation).
fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Corrupt(format!("cannot hash password: {e}")))
}

/// Whether `password` matches the stored PHC string (constant-time inside
/// argon2). A malformed stored hash matches nothing.
fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash nobody's password matches, verified when the account does not
/// exist so a miss costs what a hit costs (no timing oracle for e-mails).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut random = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut random);
        hash_password(&hex::encode(random)).unwrap_or_default()
    })
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The CSRF token of a session: derived from its secret cookie value, so it
/// is bound to the session, needs no storage, and cannot be computed by a
/// page that cannot read the cookie (HttpOnly).
pub fn csrf_token(session_token: &str) -> String {
    let digest = Sha256::digest(format!("callstream-csrf:{session_token}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// A signed-in session just made: the only time its token exists in clear.
pub struct NewSession {
    pub token: Secret,
    pub expires_at: i64,
}

/// How long sessions live (config `[auth]`).
#[derive(Debug, Clone, Copy)]
pub struct SessionLifetime {
    /// Ends a session not used for this long.
    pub idle_ms: i64,
    /// Ends every session this long after sign-in, used or not.
    pub absolute_ms: i64,
}

impl Store {
    /// Sets (or replaces) a user's password and ends their sessions. The
    /// password must pass [`check_password_rules`] (`Conflict` names the
    /// rule otherwise); `NotFound` for a user of another tenant.
    pub async fn set_user_password(
        &self,
        tenant_id: &str,
        user_id: &str,
        password: &Secret,
    ) -> Result<()> {
        check_password_rules(password.expose()).map_err(StoreError::Conflict)?;
        let plain = password.clone();
        let hash = tokio::task::spawn_blocking(move || hash_password(plain.expose()))
            .await
            .map_err(|e| StoreError::Corrupt(format!("password hashing task: {e}")))??;
        let _writer = self.writer().await;
        let done =
            sqlx::query("UPDATE users SET password_hash = $1 WHERE tenant_id = $2 AND id = $3")
                .bind(&hash)
                .bind(tenant_id)
                .bind(user_id)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.delete_user_sessions_locked(tenant_id, user_id).await
    }

    /// The tenant's user with this e-mail (compared lower-cased).
    pub async fn user_by_email(&self, tenant_id: &str, email: &str) -> Result<User> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 AND email = $2")
                .bind(tenant_id)
                .bind(email.trim().to_lowercase())
                .fetch_optional(self.pool())
                .await?;
        self.get_user(tenant_id, &id.ok_or(StoreError::NotFound)?)
            .await
    }

    /// The enabled user of `tenant_id` whose e-mail and password these are,
    /// or `None`. Always verifies one argon2 hash (a dummy when there is no
    /// such account, or it has no password), so the answer takes as long
    /// whether the account exists or not.
    pub async fn verify_login(
        &self,
        tenant_id: &str,
        email: &str,
        password: &Secret,
    ) -> Result<Option<User>> {
        let row = sqlx::query(
            "SELECT id, password_hash FROM users \
             WHERE tenant_id = $1 AND email = $2 AND disabled_at IS NULL",
        )
        .bind(tenant_id)
        .bind(email.trim().to_lowercase())
        .fetch_optional(self.pool())
        .await?;
        let (user_id, stored) = match &row {
            Some(row) => (
                Some(row.try_get::<String, _>("id")?),
                row.try_get::<Option<String>, _>("password_hash")?,
            ),
            None => (None, None),
        };
        let real = stored.is_some();
        let stored = stored.unwrap_or_else(|| dummy_hash().to_string());
        let plain = password.clone();
        let matched = tokio::task::spawn_blocking(move || {
            plain.expose().len() <= MAX_PASSWORD_BYTES && verify_password(plain.expose(), &stored)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("password check task: {e}")))?;
        match user_id {
            Some(id) if matched && real => Ok(Some(self.get_user(tenant_id, &id).await?)),
            _ => Ok(None),
        }
    }

    /// Starts a session for an enabled user; it ends `lifetime.absolute_ms`
    /// from now at the latest.
    pub async fn create_session(
        &self,
        user: &User,
        lifetime: SessionLifetime,
        now: i64,
    ) -> Result<NewSession> {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let token = format!(
            "cs_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let expires_at = now + lifetime.absolute_ms;
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO sessions (id_hash, tenant_id, user_id, created_at, last_seen_at, \
             expires_at) VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(hash_token(&token))
        .bind(&user.tenant_id)
        .bind(&user.id)
        .bind(now)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(NewSession {
            token: Secret::new(token),
            expires_at,
        })
    }

    /// The principal a session token stands for, or `None` when it is
    /// unknown, idle too long, past its absolute end, or its user is
    /// disabled. An expired session's row is deleted.
    pub async fn authenticate_session(
        &self,
        token: &str,
        lifetime: SessionLifetime,
        now: i64,
    ) -> Result<Option<Principal>> {
        if !token.starts_with("cs_") || token.len() > 128 {
            return Ok(None);
        }
        let id_hash = hash_token(token);
        let row = sqlx::query(
            "SELECT s.tenant_id, s.user_id, s.last_seen_at, s.expires_at, u.role, u.disabled_at \
             FROM sessions s JOIN users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id \
             WHERE s.id_hash = $1",
        )
        .bind(&id_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let last_seen: i64 = row.try_get("last_seen_at")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let disabled: Option<i64> = row.try_get("disabled_at")?;
        if disabled.is_some() || now >= expires_at || now - last_seen >= lifetime.idle_ms {
            let _writer = self.writer().await;
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                .bind(&id_hash)
                .execute(self.pool())
                .await?;
            return Ok(None);
        }
        if now - last_seen >= TOUCH_EVERY_MS {
            let _writer = self.writer().await;
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
                .bind(now)
                .bind(&id_hash)
                .execute(self.pool())
                .await?;
        }
        Ok(Some(Principal {
            tenant_id: row.try_get("tenant_id")?,
            user_id: row.try_get("user_id")?,
            key_id: SESSION_KEY_ID.to_string(),
            role: get_enum(&row, "role")?,
        }))
    }

    /// Ends a session (sign-out). Ending an unknown one is not an error.
    pub async fn delete_session(&self, token: &str) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(hash_token(token))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Ends every session of a user; the caller holds the writer guard.
    pub(super) async fn delete_user_sessions_locked(
        &self,
        tenant_id: &str,
        user_id: &str,
    ) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Sessions still stored for a user (tests, and an admin view later).
    pub async fn count_user_sessions(&self, tenant_id: &str, user_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant_id)
        .bind(user_id)
        .fetch_one(self.pool())
        .await?)
    }

    /// Deletes sessions past their absolute end (housekeeping; expired
    /// sessions never authenticate either way).
    pub async fn purge_expired_sessions(&self, now: i64) -> Result<u64> {
        let _writer = self.writer().await;
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{testing, Role};

    const LIFE: SessionLifetime = SessionLifetime {
        idle_ms: 30 * 60_000,
        absolute_ms: 12 * 3_600_000,
    };

    #[tokio::test]
    async fn passwords_and_sessions() {
        for store in testing::stores().await {
            let t = store.create_tenant("Acme", None).await.unwrap();
            let other = store.create_tenant("Other", None).await.unwrap();
            let ann = store
                .create_user(&t.id, "Ann", Some("ann@example.com"), Role::Agent)
                .await
                .unwrap()
                .user;
            let pw = Secret::new("correct horse battery");
            // No password yet: nobody signs in as Ann.
            assert!(store
                .verify_login(&t.id, "ann@example.com", &pw)
                .await
                .unwrap()
                .is_none());
            assert!(matches!(
                store
                    .set_user_password(&t.id, &ann.id, &Secret::new("short"))
                    .await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                store.set_user_password(&other.id, &ann.id, &pw).await,
                Err(StoreError::NotFound)
            ));
            store.set_user_password(&t.id, &ann.id, &pw).await.unwrap();
            let stored: String =
                sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
                    .bind(&ann.id)
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            assert!(stored.starts_with("$argon2id$"), "{stored}");
            assert!(!stored.contains("horse"));
            let who = store
                .verify_login(&t.id, " ANN@example.com", &pw)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(who.id, ann.id);
            for (tenant, email, password) in [
                (&t.id, "ann@example.com", "wrong password!"),
                (&other.id, "ann@example.com", pw.expose()),
                (&t.id, "bob@example.com", pw.expose()),
            ] {
                assert!(store
                    .verify_login(tenant, email, &Secret::new(password))
                    .await
                    .unwrap()
                    .is_none());
            }

            // A session authenticates with the user's role; only its hash is stored.
            let s = store.create_session(&who, LIFE, 1_000).await.unwrap();
            let p = store
                .authenticate_session(s.token.expose(), LIFE, 2_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!((p.tenant_id.as_str(), p.role), (t.id.as_str(), Role::Agent));
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE id_hash = $1")
                .bind(s.token.expose())
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(n, 0);
            // Idle too long, or past the absolute end: gone.
            assert!(store
                .authenticate_session(s.token.expose(), LIFE, 1_000 + LIFE.idle_ms)
                .await
                .unwrap()
                .is_none());
            assert_eq!(store.count_user_sessions(&t.id, &ann.id).await.unwrap(), 0);
            let s = store.create_session(&who, LIFE, 0).await.unwrap();
            let mut at = 0;
            while at + LIFE.idle_ms / 2 < LIFE.absolute_ms {
                at += LIFE.idle_ms / 2;
                assert!(store
                    .authenticate_session(s.token.expose(), LIFE, at)
                    .await
                    .unwrap()
                    .is_some());
            }
            assert!(store
                .authenticate_session(s.token.expose(), LIFE, LIFE.absolute_ms)
                .await
                .unwrap()
                .is_none());

            // Sign-out, a new password, and disabling each end sessions.
            let s = store.create_session(&who, LIFE, 0).await.unwrap();
            store.delete_session(s.token.expose()).await.unwrap();
            assert!(store
                .authenticate_session(s.token.expose(), LIFE, 1)
                .await
                .unwrap()
                .is_none());
            let s = store.create_session(&who, LIFE, 0).await.unwrap();
            store
                .set_user_password(&t.id, &ann.id, &Secret::new("another long password"))
                .await
                .unwrap();
            assert!(store
                .authenticate_session(s.token.expose(), LIFE, 1)
                .await
                .unwrap()
                .is_none());
            let pw = Secret::new("another long password");
            let who = store
                .verify_login(&t.id, "ann@example.com", &pw)
                .await
                .unwrap()
                .unwrap();
            let s = store.create_session(&who, LIFE, 0).await.unwrap();
            store.disable_user(&t.id, &ann.id).await.unwrap();
            assert_eq!(store.count_user_sessions(&t.id, &ann.id).await.unwrap(), 0);
            assert!(store
                .authenticate_session(s.token.expose(), LIFE, 1)
                .await
                .unwrap()
                .is_none());
            assert!(store
                .verify_login(&t.id, "ann@example.com", &pw)
                .await
                .unwrap()
                .is_none());
            assert!(store
                .authenticate_session("cs_garbage", LIFE, 1)
                .await
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        assert_eq!(csrf_token("cs_a"), csrf_token("cs_a"));
        assert_ne!(csrf_token("cs_a"), csrf_token("cs_b"));
        assert!(!csrf_token("cs_a").contains("cs_a"));
    }
}
