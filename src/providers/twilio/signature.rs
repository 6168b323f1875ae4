//! `X-Twilio-Signature`: how Twilio signs webhooks and the Media Streams
//! WebSocket upgrade.
//!
//! The signature is `base64(HMAC-SHA1(auth_token, url + name1 + value1 + …))`
//! over the URL exactly as Twilio called it and the POST parameters sorted by
//! name. JSON-bodied webhooks instead carry `bodySHA256=<hex sha256(body)>`
//! in the URL and sign the URL alone; the stream upgrade (a GET) signs the
//! `wss://` URL alone.
//!
//! Proxies rewrite scheme, host and port, so the URL must be rebuilt from the
//! configured public base URL ([`stream_url`] does it for the stream), never
//! from the request's `Host`. The signature carries no timestamp: replays
//! are the callers' problem (idempotent status callbacks).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The request header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

type HmacSha1 = Hmac<Sha1>;

/// The signature Twilio would send for `url` and form `params`.
#[must_use]
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(auth_token, url, &sorted(params)))
}

/// Checks `header` against a form-encoded (or parameterless) request.
///
/// Whether the URL Twilio signed carried the default port depends on how it
/// was configured, so a URL with an explicit default port (`:443` for
/// https/wss, `:80` for http/ws) is also tried without it, and one without a
/// port also with it. Non-default ports are never dropped.
#[must_use]
pub fn validate(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let Some(given) = decode_header(header) else {
        return false;
    };
    let params = sorted(params);
    let mut ok = given.ct_eq(&mac(auth_token, url, &params));
    if let Some(alt) = default_port_variant(url) {
        ok |= given.ct_eq(&mac(auth_token, &alt, &params));
    }
    ok.into()
}

/// Checks a JSON-bodied request: the URL's `bodySHA256` query parameter must
/// equal the hex SHA-256 of `body`, and `header` must sign the URL alone
/// (including that parameter). A URL without exactly one `bodySHA256` fails.
#[must_use]
pub fn validate_json_body(auth_token: &str, url: &str, body: &[u8], header: &str) -> bool {
    let Some(claimed) = body_sha256_param(url) else {
        return false;
    };
    let actual: [u8; 32] = Sha256::digest(body).into();
    let body_ok = claimed.ct_eq(&actual);
    // Both checks run whatever the first says; only the answer is revealed.
    let signature_ok = validate(auth_token, url, &[], header);
    bool::from(body_ok) & signature_ok
}

/// The URL Twilio calls, and signs, for the stream: `public_base_url`
/// (http/https, as configured for the proxy in front of us) with its scheme
/// switched to ws/wss and `path_and_query` appended. Host and port are kept
/// exactly as written, since the signature covers the exact string.
pub fn stream_url(public_base_url: &str, path_and_query: &str) -> Result<String, StreamUrlError> {
    let (scheme, rest) = public_base_url
        .split_once("://")
        .ok_or(StreamUrlError::NotAbsolute)?;
    let ws_scheme = if scheme.eq_ignore_ascii_case("https") {
        "wss"
    } else if scheme.eq_ignore_ascii_case("http") {
        "ws"
    } else {
        return Err(StreamUrlError::Scheme);
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        return Err(StreamUrlError::NoHost);
    }
    if rest.contains(['?', '#']) {
        return Err(StreamUrlError::QueryOrFragment);
    }
    let path = path_and_query.trim_start_matches('/');
    Ok(format!("{ws_scheme}://{rest}/{path}"))
}

/// Why a configured public base URL cannot produce a stream URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamUrlError {
    #[error("public base URL must be absolute (scheme://host)")]
    NotAbsolute,
    #[error("public base URL must use http or https")]
    Scheme,
    #[error("public base URL has no host")]
    NoHost,
    #[error("public base URL must not have a query or fragment")]
    QueryOrFragment,
}

/// Parameters in signing order: by name, then by value for repeated names.
/// Byte order is the Unicode code point order Twilio specifies. Exact
/// duplicates are kept.
fn sorted(params: &[(String, String)]) -> Vec<&(String, String)> {
    let mut sorted: Vec<_> = params.iter().collect();
    sorted.sort_unstable();
    sorted
}

fn mac(auth_token: &str, url: &str, sorted_params: &[&(String, String)]) -> [u8; 20] {
    let mut m =
        HmacSha1::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    m.update(url.as_bytes());
    for (name, value) in sorted_params {
        m.update(name.as_bytes());
        m.update(value.as_bytes());
    }
    m.finalize().into_bytes().into()
}

fn decode_header(header: &str) -> Option<[u8; 20]> {
    // A SHA-1 MAC is 28 base64 characters; refuse to decode anything longer.
    if header.len() != 28 {
        return None;
    }
    let mut out = [0u8; 20];
    match STANDARD.decode_slice(header, &mut out) {
        Ok(20) => Some(out),
        _ => None,
    }
}

fn body_sha256_param(url: &str) -> Option<[u8; 32]> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    let mut found = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name == "bodySHA256" {
            if found.is_some() {
                return None;
            }
            let mut hash = [0u8; 32];
            hex::decode_to_slice(value.as_bytes(), &mut hash).ok()?;
            found = Some(hash);
        }
    }
    found
}

/// `url` with its default port removed if explicit, or added if absent.
/// `None` for other schemes, non-default ports and unparsable authorities.
fn default_port_variant(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" | "wss" => "443",
        "http" | "ws" => "80",
        _ => return None,
    };
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    // An IPv6 literal has colons of its own; the port comes after `]`.
    let host_len = match host_port.strip_prefix('[') {
        Some(v6) => v6.find(']')? + 2,
        None => host_port.find(':').unwrap_or(host_port.len()),
    };
    if host_len == 0 {
        return None;
    }
    let before = &url[..scheme.len() + 3 + host_start + host_len];
    let after_authority = &rest[authority_len..];
    match &host_port[host_len..] {
        "" => Some(format!("{before}:{default}{after_authority}")),
        port if port.strip_prefix(':') == Some(default) => {
            Some(format!("{before}{after_authority}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // Vectors computed independently with Python's hmac/hashlib (see each).

    /// Twilio's documented example (https://www.twilio.com/docs/usage/security;
    /// the same vector appears in Twilio's SDK tests). Verified with
    /// `base64(hmac.new(b"12345", url + "".join(k+v for k,v in sorted(p)), sha1))`.
    #[test]
    fn twilio_documented_example() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = p(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("Caller", "+12349013030"),
        ]);
        assert_eq!(
            compute("12345", url, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert!(validate(
            "12345",
            url,
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    /// twilio-python's test vector (other caller numbers), same algorithm.
    #[test]
    fn twilio_sdk_vector() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ]);
        assert!(validate(
            "12345",
            url,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn tampered_param_wrong_token_wrong_url_fail() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let good = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        let sig = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        let mut tampered = good.clone();
        tampered[2].1 = "9999".into();
        assert!(!validate("12345", url, &tampered, sig));
        let mut extra = good.clone();
        extra.push(("Evil".into(), "1".into()));
        assert!(!validate("12345", url, &extra, sig));
        assert!(!validate("12346", url, &good, sig));
        assert!(!validate(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &good,
            sig
        ));
        assert!(!validate("12345", url, &good, ""));
        assert!(!validate(
            "12345",
            url,
            &good,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ"
        ));
        assert!(!validate(
            "12345",
            url,
            &good,
            "not base64 at all, 28 chars!"
        ));
    }

    /// Python: sign "wss://gw.example.com:443/twilio/stream?x=1" etc. with
    /// token "secret-token", no params.
    #[test]
    fn default_port_variants() {
        let token = "secret-token";
        let with_port = "wss://gw.example.com:443/twilio/stream?x=1";
        let without = "wss://gw.example.com/twilio/stream?x=1";
        let sig_with = "v6TA+V2F+drQVHZ3OPMCEzxgNTU=";
        let sig_without = "D45iPdHyYXUXS1dNKy0QT/wz9Cs=";
        assert_eq!(compute(token, with_port, &[]), sig_with);
        assert_eq!(compute(token, without, &[]), sig_without);
        // Either form of the URL accepts either signature.
        for url in [with_port, without] {
            for sig in [sig_with, sig_without] {
                assert!(validate(token, url, &[], sig), "{url} {sig}");
            }
        }
        // http default is 80, and a non-default port is never dropped.
        let http = "http://gw.example.com/hook";
        let http80 = "http://gw.example.com:80/hook";
        assert_eq!(compute(token, http80, &[]), "pqx+bYmWFejORtLSjuLWgEXPPXo=");
        assert!(validate(token, http, &[], "pqx+bYmWFejORtLSjuLWgEXPPXo="));
        let odd = "https://gw.example.com:8443/hook";
        let sig_odd_stripped = compute(token, "https://gw.example.com/hook", &[]);
        assert!(!validate(token, odd, &[], &sig_odd_stripped));
        // https's default is not 80.
        let sig_80 = compute(token, "https://gw.example.com:80/hook", &[]);
        assert!(!validate(
            token,
            "https://gw.example.com/hook",
            &[],
            &sig_80
        ));
    }

    #[test]
    fn port_variant_edge_cases() {
        let v = default_port_variant;
        assert_eq!(v("https://h/x").as_deref(), Some("https://h:443/x"));
        assert_eq!(v("https://h").as_deref(), Some("https://h:443"));
        assert_eq!(v("HTTPS://h:443?q").as_deref(), Some("HTTPS://h?q"));
        assert_eq!(v("http://u:p@h:80/x").as_deref(), Some("http://u:p@h/x"));
        assert_eq!(v("http://u:p@h/x").as_deref(), Some("http://u:p@h:80/x"));
        assert_eq!(v("wss://[::1]:443/x").as_deref(), Some("wss://[::1]/x"));
        assert_eq!(v("ws://[::1]/x").as_deref(), Some("ws://[::1]:80/x"));
        assert_eq!(v("https://h:8443/x"), None);
        assert_eq!(v("ftp://h/x"), None);
        assert_eq!(v("https:///x"), None);
        assert_eq!(v("no scheme"), None);
        assert_eq!(v("https://[::1/x"), None);
    }

    /// The JSON-body example from Twilio's SDK tests: body
    /// `{"property": "value", "boolean": true}`, its SHA-256 and the
    /// signature over the URL with `bodySHA256`, all re-derived in Python.
    #[test]
    fn json_body_variant() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=\
                   0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert_eq!(compute("12345", url, &[]), sig);
        assert!(validate_json_body("12345", url, body, sig));
        assert!(!validate_json_body(
            "12345",
            url,
            b"{\"property\": \"value\", \"boolean\": false}",
            sig
        ));
        assert!(!validate_json_body("54321", url, body, sig));
        // Signed URL without the body hash: not a JSON-body request.
        let plain = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(!validate_json_body(
            "12345",
            plain,
            body,
            &compute("12345", plain, &[])
        ));
        // Two hashes are ambiguous, even if the signature covers both.
        let twice = format!("{url}&bodySHA256=00");
        assert!(!validate_json_body(
            "12345",
            &twice,
            body,
            &compute("12345", &twice, &[])
        ));
        let bad_hex = "https://mycompany.com/x?bodySHA256=zz";
        assert!(!validate_json_body(
            "12345",
            bad_hex,
            body,
            &compute("12345", bad_hex, &[])
        ));
    }

    /// Repeated names sort by value; Python: sorted([("Digits","5678"),
    /// ("Digits","1234"), ("Sid","CA123"), ("SidAccount","AC123")]). Also
    /// twilio-python's vector for this case (it additionally drops exact
    /// duplicate pairs; we keep them).
    #[test]
    fn repeated_names_sort_by_value() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = p(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            compute("12345", url, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn stream_url_from_public_base() {
        assert_eq!(
            stream_url("https://gw.example.com", "/twilio/stream?t=1").as_deref(),
            Ok("wss://gw.example.com/twilio/stream?t=1")
        );
        assert_eq!(
            stream_url("HTTP://gw.example.com:8080/prefix/", "twilio/stream").as_deref(),
            Ok("ws://gw.example.com:8080/prefix/twilio/stream")
        );
        assert_eq!(
            stream_url("gw.example.com", "/x"),
            Err(StreamUrlError::NotAbsolute)
        );
        assert_eq!(
            stream_url("ftp://gw.example.com", "/x"),
            Err(StreamUrlError::Scheme)
        );
        assert_eq!(stream_url("https://", "/x"), Err(StreamUrlError::NoHost));
        assert_eq!(stream_url("https:///p", "/x"), Err(StreamUrlError::NoHost));
        assert_eq!(
            stream_url("https://h/?a=1", "/x"),
            Err(StreamUrlError::QueryOrFragment)
        );
    }

    /// The stream upgrade is signed over the wss URL built by `stream_url`.
    #[test]
    fn stream_upgrade_round_trip() {
        let url = stream_url("https://gw.example.com", "/twilio/stream").unwrap();
        let sig = compute("tok", &url, &[]);
        assert!(validate("tok", &url, &[], &sig));
        assert!(!validate(
            "tok",
            "ws://gw.example.com/twilio/stream",
            &[],
            &sig
        ));
    }

    #[test]
    fn random_inputs_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet: &[u8] = b"ab:/@[]?#&=%.0123456789htpsw ";
        for _ in 0..20_000 {
            let len = rng.gen_range(0..40);
            let s: String = (0..len)
                .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
                .collect();
            let _ = default_port_variant(&s);
            let _ = validate("t", &s, &[], &s);
            let _ = validate_json_body("t", &s, s.as_bytes(), "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
            let _ = stream_url(&s, &s);
        }
    }
}
