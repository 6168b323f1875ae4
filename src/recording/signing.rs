//! Signed download links (sans-IO): HMAC-SHA256 over the method, the path
//! (which names the recording), the tenant, the expiry and the key id, so a
//! link opens exactly one tenant's recording until it expires and cannot be
//! edited into another. Signing keys form a ring: the newest signs, every
//! key in the ring verifies, so keys rotate by adding a new one and later
//! dropping the old (its links then stop working).

use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Why a link is refused. Callers answer all of them with the same 403, so
/// a prober learns nothing; the variants are for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("link is missing a parameter or malformed")]
    Malformed,
    #[error("link has expired")]
    Expired,
    #[error("link was signed with a key no longer in the ring")]
    UnknownKey,
    #[error("link signature does not match")]
    BadSignature,
}

/// Errors loading a key ring.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("url signing key file {path}: {message}")]
    File { path: String, message: String },
    #[error("url signing keys: {0}")]
    Invalid(String),
}

/// One signing key: a public id (travels in links) and its secret.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    pub id: String,
    pub secret: Secret,
}

/// Key ids appear in URLs: keep them short and plain.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks a key list: at least one key, ids plain and unique, secrets of at
/// least 32 characters.
pub fn validate_keys(keys: &[SigningKey]) -> Result<(), String> {
    if keys.is_empty() {
        return Err("needs at least one key".into());
    }
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        if !valid_id(&k.id) {
            return Err(format!(
                "key id {:?} must be 1-64 letters, digits, '-' or '_'",
                k.id
            ));
        }
        if !seen.insert(k.id.as_str()) {
            return Err(format!("key id {:?} appears twice", k.id));
        }
        if k.secret.expose().len() < 32 {
            return Err(format!(
                "secret of key {:?} must be at least 32 characters",
                k.id
            ));
        }
    }
    Ok(())
}

/// A configured key list, oldest first (`[recording] url_signing_keys` as
/// a TOML array of `{ id, secret }`, or in the environment as
/// `id:secret,id:secret`).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(transparent)]
pub struct SigningKeys(pub Vec<SigningKey>);

impl std::str::FromStr for SigningKeys {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|pair| {
                let (id, secret) = pair
                    .trim()
                    .split_once(':')
                    .ok_or("expected id:secret[,id:secret…]")?;
                Ok(SigningKey {
                    id: id.to_string(),
                    secret: Secret::new(secret),
                })
            })
            .collect::<Result<_, String>>()
            .map(SigningKeys)
    }
}

/// A signed link's query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkParams {
    pub tenant: String,
    /// Unix seconds after which the link is refused.
    pub expires: i64,
    pub key_id: String,
    /// Lower-case hex HMAC-SHA256.
    pub signature: String,
}

impl LinkParams {
    /// The query string (`tenant=…&expires=…&key_id=…&signature=…`); every
    /// value is URL-safe already (ids are checked, signature is hex).
    pub fn query(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("tenant", &self.tenant)
            .append_pair("expires", &self.expires.to_string())
            .append_pair("key_id", &self.key_id)
            .append_pair("signature", &self.signature)
            .finish()
    }

    /// Reads a link's query string back; anything missing, malformed or
    /// given twice (which one was signed?) is `None`.
    pub fn parse(query: Option<&str>) -> Option<Self> {
        let (mut tenant, mut expires, mut key_id, mut signature) = (None, None, None, None);
        for (k, v) in url::form_urlencoded::parse(query?.as_bytes()) {
            let slot = match k.as_ref() {
                "tenant" => &mut tenant,
                "expires" => &mut expires,
                "key_id" => &mut key_id,
                "signature" => &mut signature,
                _ => continue,
            };
            if slot.replace(v.into_owned()).is_some() {
                return None;
            }
        }
        Some(Self {
            tenant: tenant?,
            expires: expires?.parse().ok()?,
            key_id: key_id?,
            signature: signature?,
        })
    }
}

/// The signing key ring; the last key is the newest and signs.
#[derive(Clone)]
pub struct UrlSigner {
    keys: Vec<SigningKey>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("UrlSigner").field("key_ids", &ids).finish()
    }
}

impl UrlSigner {
    pub fn new(keys: Vec<SigningKey>) -> Result<Self, KeyringError> {
        validate_keys(&keys).map_err(KeyringError::Invalid)?;
        Ok(Self { keys })
    }

    /// A ring of one random key that lives as long as the process (links
    /// die with it): for tests and embedders that configure none.
    pub fn ephemeral() -> Self {
        Self {
            keys: vec![random_key("ephemeral")],
        }
    }

    /// The ring kept in `path` (one `id secret` line per key, oldest
    /// first), created with one random key (mode 0600) when absent.
    /// Rotate by appending a line and restarting; drop the old line once
    /// its links may stop working.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyringError> {
        let err = |message: String| KeyringError::File {
            path: path.display().to_string(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut keys = Vec::new();
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let Some((id, secret)) = line.split_once(char::is_whitespace) else {
                        return Err(err(format!("line {}: expected `id secret`", n + 1)));
                    };
                    keys.push(SigningKey {
                        id: id.to_string(),
                        secret: Secret::new(secret.trim()),
                    });
                }
                validate_keys(&keys).map_err(err)?;
                Ok(Self { keys })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = format!("k{}", crate::store::now_ms() / 1000);
                let key = random_key(&id);
                let line = format!("{} {}", key.id, key.secret.expose());
                crate::secret::write_new_private(path, line.as_bytes())
                    .map_err(|e| err(e.to_string()))?;
                Ok(Self { keys: vec![key] })
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Id of the key that signs new links.
    pub fn current_key_id(&self) -> &str {
        // `new`/`load_or_create` refuse an empty ring.
        self.keys.last().map(|k| k.id.as_str()).unwrap_or_default()
    }

    fn mac(
        secret: &Secret,
        method: &str,
        path: &str,
        tenant: &str,
        expires: i64,
        key_id: &str,
    ) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail.
        let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(format!("{method}\n{path}\n{tenant}\n{expires}\n{key_id}").as_bytes());
        mac
    }

    /// Signs `method path` for `tenant` until `expires` (unix seconds).
    pub fn sign(&self, method: &str, path: &str, tenant: &str, expires: i64) -> LinkParams {
        let key = self
            .keys
            .last()
            .unwrap_or_else(|| unreachable!("rings are never empty"));
        let mac = Self::mac(&key.secret, method, path, tenant, expires, &key.id);
        LinkParams {
            tenant: tenant.to_string(),
            expires,
            key_id: key.id.clone(),
            signature: hex::encode(mac.finalize().into_bytes()),
        }
    }

    /// Checks a link for `method path` at `now` (unix seconds). The
    /// signature is compared in constant time.
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        link: &LinkParams,
        now: i64,
    ) -> Result<(), LinkError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == link.key_id)
            .ok_or(LinkError::UnknownKey)?;
        let given = hex::decode(&link.signature).map_err(|_| LinkError::BadSignature)?;
        let expected = Self::mac(
            &key.secret,
            method,
            path,
            &link.tenant,
            link.expires,
            &key.id,
        )
        .finalize()
        .into_bytes();
        if !bool::from(expected.as_slice().ct_eq(&given)) {
            return Err(LinkError::BadSignature);
        }
        // Checked after the signature so an edited expiry reads as tampering.
        if now > link.expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

fn random_key(id: &str) -> SigningKey {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    SigningKey {
        id: id.to_string(),
        secret: Secret::new(hex::encode(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> SigningKey {
        SigningKey {
            id: id.into(),
            secret: Secret::new(format!("{id}-0123456789abcdef0123456789abcdef")),
        }
    }

    const P: &str = "/v1/recordings/r1/download";

    #[test]
    fn signs_verifies_and_refuses_every_edit() {
        let s = UrlSigner::new(vec![key("a"), key("b")]).unwrap();
        let link = s.sign("GET", P, "t1", 1000);
        assert_eq!(link.key_id, "b");
        assert_eq!(s.verify("GET", P, &link, 1000), Ok(()));
        assert_eq!(s.verify("GET", P, &link, 1001), Err(LinkError::Expired));
        assert_eq!(
            s.verify("DELETE", P, &link, 0),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            s.verify("GET", "/v1/recordings/r2/download", &link, 0),
            Err(LinkError::BadSignature)
        );
        let edits = [
            LinkParams {
                tenant: "t2".into(),
                ..link.clone()
            },
            LinkParams {
                expires: 5000,
                ..link.clone()
            },
            LinkParams {
                key_id: "a".into(),
                ..link.clone()
            },
            LinkParams {
                signature: link.signature.replace(&link.signature[..2], "00"),
                ..link.clone()
            },
            LinkParams {
                signature: "zz".into(),
                ..link.clone()
            },
        ];
        for e in edits {
            assert!(s.verify("GET", P, &e, 0).is_err(), "{e:?}");
        }
        assert_eq!(
            s.verify(
                "GET",
                P,
                &LinkParams {
                    key_id: "c".into(),
                    ..link
                },
                0
            ),
            Err(LinkError::UnknownKey)
        );
    }

    #[test]
    fn rotation_keeps_old_links_while_their_key_is_in_the_ring() {
        let old = UrlSigner::new(vec![key("a")]).unwrap();
        let link = old.sign("GET", P, "t", 100);
        let rotated = UrlSigner::new(vec![key("a"), key("b")]).unwrap();
        assert_eq!(rotated.verify("GET", P, &link, 0), Ok(()));
        assert_eq!(rotated.sign("GET", P, "t", 100).key_id, "b");
        let dropped = UrlSigner::new(vec![key("b")]).unwrap();
        assert_eq!(
            dropped.verify("GET", P, &link, 0),
            Err(LinkError::UnknownKey)
        );
    }

    #[test]
    fn key_lists_and_files_are_checked() {
        assert!(UrlSigner::new(vec![]).is_err());
        assert!(UrlSigner::new(vec![key("a"), key("a")]).is_err());
        assert!(UrlSigner::new(vec![key("a b")]).is_err());
        let short = SigningKey {
            id: "a".into(),
            secret: Secret::new("short"),
        };
        assert!(UrlSigner::new(vec![short]).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("url-signing.keys");
        let first = UrlSigner::load_or_create(&path).unwrap();
        let again = UrlSigner::load_or_create(&path).unwrap();
        assert_eq!(first.current_key_id(), again.current_key_id());
        let link = first.sign("GET", P, "t", 10);
        assert_eq!(again.verify("GET", P, &link, 0), Ok(()));
        // Rotation by appending a line: the new key signs, the old verifies.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("k2 0123456789abcdef0123456789abcdef-2\n");
        std::fs::write(&path, text).unwrap();
        let rotated = UrlSigner::load_or_create(&path).unwrap();
        assert_eq!(rotated.current_key_id(), "k2");
        assert_eq!(rotated.verify("GET", P, &link, 0), Ok(()));
        std::fs::write(&path, "bad-line-without-secret\n").unwrap();
        assert!(UrlSigner::load_or_create(&path).is_err());
        assert!(!format!("{rotated:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn link_parameters_are_all_needed_once() {
        let ok = "tenant=t&expires=10&key_id=k&signature=ab";
        assert_eq!(LinkParams::parse(Some(ok)).unwrap().expires, 10);
        for q in [
            "tenant=t&expires=10&key_id=k",
            "tenant=t&expires=x&key_id=k&signature=ab",
            "tenant=t&expires=10&key_id=k&signature=ab&tenant=u",
            "",
        ] {
            assert!(LinkParams::parse(Some(q)).is_none(), "{q}");
        }
        assert!(LinkParams::parse(None).is_none());
    }
}
