//! Per-call stream tokens.
//!
//! Twilio signs the stream upgrade with the account's auth token, which says
//! "some call on this account" but not which tenant or call. When we answer a
//! call we issue a short-lived token bound to the tenant and the call SID and
//! put it in the TwiML (`<Parameter name="token" value="…"/>`); it comes back
//! in `start.customParameters`, before any per-call state is allocated.
//!
//! Format: `v1.<tenant_id>.<call_sid>.<expires_unix_secs>.<mac>` where `mac`
//! is base64url (no padding) of HMAC-SHA256(secret, everything before it).
//! Tenant ids (UUIDs) and call SIDs contain no `.`; a token built from
//! values that do has more than five parts and is rejected, never misread.
//!
//! The secret should be at least 32 random bytes; checking that is config's job.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `<Parameter>` name the token travels under.
pub const TOKEN_PARAMETER: &str = "token";

const VERSION: &str = "v1";
/// Far above any real token (~130 bytes); bounds the work spent on garbage.
pub const MAX_TOKEN_LEN: usize = 512;

type HmacSha256 = Hmac<Sha256>;

/// What a valid token vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTokenClaims {
    pub tenant_id: String,
    pub call_sid: String,
    /// Unix seconds; the token is valid while `now < expires_at`.
    pub expires_at: i64,
}

/// Why a token was refused. Carries nothing from the token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("stream token is malformed")]
    Malformed,
    #[error("stream token signature does not verify")]
    BadSignature,
    #[error("stream token has expired")]
    Expired,
}

/// Issues a token for one call, valid until `expires_at_unix`.
#[must_use]
pub fn issue(secret: &[u8], tenant_id: &str, call_sid: &str, expires_at_unix: i64) -> String {
    let mut token = format!("{VERSION}.{tenant_id}.{call_sid}.{expires_at_unix}");
    let tag = mac(secret, &token).finalize().into_bytes();
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag, &mut token);
    token
}

/// Checks `token`'s signature (in constant time), then its expiry against
/// `now_unix`. Expiry is only reported for authentic tokens.
pub fn verify(secret: &[u8], token: &str, now_unix: i64) -> Result<StreamTokenClaims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (signed, tag_b64) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mut parts = signed.split('.');
    let (Some(VERSION), Some(tenant_id), Some(call_sid), Some(expires), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    if !is_id(tenant_id) || !is_id(call_sid) {
        return Err(TokenError::Malformed);
    }
    // Digits only: the canonical form `issue` writes for a non-negative time.
    if expires.is_empty() || !expires.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expires_at: i64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    let mut tag = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(tag_b64, &mut tag) {
        Ok(32) => {}
        _ => return Err(TokenError::Malformed),
    }
    mac(secret, signed)
        .verify_slice(&tag)
        .map_err(|_| TokenError::BadSignature)?;
    if now_unix >= expires_at {
        return Err(TokenError::Expired);
    }
    Ok(StreamTokenClaims {
        tenant_id: tenant_id.to_owned(),
        call_sid: call_sid.to_owned(),
        expires_at,
    })
}

fn mac(secret: &[u8], signed: &str) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(signed.as_bytes());
    m
}

/// UUIDs and SIDs: non-empty ASCII alphanumerics and `-`/`_`.
fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const TENANT: &str = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
    const CALL: &str = "CA0123456789abcdef0123456789abcdef";
    const EXP: i64 = 1_900_000_000;

    /// Python: base64.urlsafe_b64encode(hmac.new(SECRET, b"v1.<TENANT>.<CALL>.1900000000",
    /// hashlib.sha256).digest()).rstrip(b"=").
    const VECTOR: &str =
        "v1.7d444840-9dc0-11d1-b245-5ffdce74fad2.CA0123456789abcdef0123456789abcdef.\
                          1900000000.6UlqJNHVw8dczF2MoMQNtHD9lRby5BNBGlQrw_NNZ_4";

    #[test]
    fn issue_matches_independent_vector() {
        assert_eq!(issue(SECRET, TENANT, CALL, EXP), VECTOR);
    }

    #[test]
    fn round_trip() {
        let t = issue(SECRET, TENANT, CALL, EXP);
        let claims = verify(SECRET, &t, EXP - 1).unwrap();
        assert_eq!(
            claims,
            StreamTokenClaims {
                tenant_id: TENANT.into(),
                call_sid: CALL.into(),
                expires_at: EXP,
            }
        );
    }

    #[test]
    fn expired_at_and_after_expiry() {
        let t = issue(SECRET, TENANT, CALL, EXP);
        assert_eq!(verify(SECRET, &t, EXP), Err(TokenError::Expired));
        assert_eq!(verify(SECRET, &t, EXP + 3600), Err(TokenError::Expired));
    }

    #[test]
    fn expiry_is_checked_only_after_the_signature() {
        let t = issue(b"other secret", TENANT, CALL, EXP);
        assert_eq!(verify(SECRET, &t, EXP + 1), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampering_is_detected() {
        let t = issue(SECRET, TENANT, CALL, EXP);
        let swap = |from: &str, to: &str| t.replacen(from, to, 1);
        let other_tenant = swap(TENANT, "8d444840-9dc0-11d1-b245-5ffdce74fad2");
        let other_call = swap(CALL, "CA1123456789abcdef0123456789abcdef");
        let later = swap("1900000000", "1900000001");
        for forged in [other_tenant, other_call, later] {
            assert_eq!(verify(SECRET, &forged, 0), Err(TokenError::BadSignature));
        }
        // Flip one character of the MAC (keeping it valid base64url).
        let mut sig_flip = t.clone().into_bytes();
        let last = sig_flip.len() - 2;
        sig_flip[last] = if sig_flip[last] == b'A' { b'B' } else { b'A' };
        let sig_flip = String::from_utf8(sig_flip).unwrap();
        assert_eq!(verify(SECRET, &sig_flip, 0), Err(TokenError::BadSignature));
        assert_eq!(
            verify(b"wrong secret", &t, 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let t = issue(SECRET, TENANT, CALL, EXP);
        let (signed, tag) = t.rsplit_once('.').unwrap();
        let cases = [
            String::new(),
            ".".into(),
            "....".into(),
            "v1".into(),
            "not a token".into(),
            t.replacen("v1.", "v2.", 1),
            format!("{signed}.{tag}.extra"),
            format!("{signed}.{tag}="),
            format!("{signed}.{}", &tag[1..]),
            format!("{signed}.{tag}{tag}"),
            t.replacen("1900000000", "+1900000000", 1),
            t.replacen("1900000000", "-1900000000", 1),
            t.replacen("1900000000", "99999999999999999999", 1),
            t.replacen("1900000000", "", 1),
            t.replacen(TENANT, "", 1),
            t.replacen(CALL, "CA 123", 1),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ];
        for c in cases {
            assert_eq!(verify(SECRET, &c, 0), Err(TokenError::Malformed), "{c:?}");
        }
    }

    #[test]
    fn dotted_ids_make_an_unverifiable_token() {
        let t = issue(SECRET, "a.b", CALL, EXP);
        assert_eq!(verify(SECRET, &t, 0), Err(TokenError::Malformed));
    }

    #[test]
    fn errors_do_not_echo_the_token() {
        let t = issue(SECRET, TENANT, CALL, EXP);
        let e = verify(b"wrong", &t, 0).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(CALL) && !shown.contains(TENANT));
    }

    #[test]
    fn random_strings_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let t = issue(SECRET, TENANT, CALL, EXP);
        for _ in 0..20_000 {
            let mut b = t.clone().into_bytes();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            b.truncate(rng.gen_range(0..=b.len()));
            let s = String::from_utf8_lossy(&b);
            if s != t {
                assert!(verify(SECRET, &s, 0).is_err());
            }
        }
    }
}
