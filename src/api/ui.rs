//! Browser pages: the console shell `GET /ui/`, the sign-in form
//! `GET /ui/login` (rendered by [`login_page`]), and the agent page
//! `GET /ui/calls/{id}` with a call's live captions.
//!
//! Static files compiled into the binary (no build step, nothing fetched
//! from elsewhere; see web/DESIGN.md). The pages need no auth: they hold no
//! data. The shell's API calls carry the session cookie; the captions page
//! takes a key from its URL fragment (never sent in a request line) or a
//! form.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppError;

const PAGE: &str = include_str!("../../web/call.html");
const SHELL: &str = include_str!("../../web/app.html");
const LOGIN: &str = include_str!("../../web/login.html");

/// Assets by file name: content type and body.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "call.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/call.js"),
    ),
    (
        "call.css",
        "text/css; charset=utf-8",
        include_str!("../../web/call.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../web/console.css"),
    ),
];

/// The console's pages: our own scripts, styles and API only (EventSource
/// included: `'self'`); forms post only to us.
const CONSOLE_CSP: &str = "default-src 'self'; img-src 'self'; object-src 'none'; \
                           base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Only our own script, styles and API; the captions WebSocket included.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's routes on their own, for the tests below (`api::app` mounts
/// them from the route table).
#[cfg(test)]
fn router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    use axum::routing::get;
    axum::Router::new()
        .route("/ui/calls/{id}", get(page))
        .route("/ui/assets/{file}", get(asset))
}

/// Headers every UI response carries.
fn common_headers(content_type: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h
}

/// The same page for every call: the script reads the id from the path.
pub(super) async fn page() -> Response {
    let mut h = common_headers("text/html; charset=utf-8");
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    // Tiny, and must pick up a new deployment's asset names at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (h, PAGE).into_response()
}

/// A console page: strict CSP, never cached (it must pick up new asset
/// names at once, and the sign-in form may echo what was typed).
fn console_page(status: StatusCode, body: String) -> Response {
    let mut h = common_headers("text/html; charset=utf-8");
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONSOLE_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // With `no-referrer` Chromium sends `Origin: null` on form posts, which
    // the sign-in's Origin check must refuse; `same-origin` still tells
    // other sites nothing.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    (status, h, body).into_response()
}

/// `GET /ui/`: the signed-in console; its script asks `/ui/session` who is
/// signed in and sends everyone else to the sign-in form.
pub(super) async fn shell() -> Response {
    console_page(StatusCode::OK, SHELL.to_string())
}

/// The sign-in form, with the organisation and e-mail typed so far and a
/// message (escaped: they come from the request).
pub(super) fn login_page(
    status: StatusCode,
    tenant: &str,
    email: &str,
    error: Option<&str>,
) -> Response {
    let body = LOGIN
        .replace("{{tenant}}", &escape_html(tenant))
        .replace("{{email}}", &escape_html(email))
        .replace("{{error}}", &escape_html(error.unwrap_or_default()))
        .replace(
            "{{error_hidden}}",
            if error.is_some() { "" } else { " hidden" },
        );
    console_page(status, body)
}

/// Text made safe for HTML element content and quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Assets keep their names across releases, so browsers revalidate each use
/// (`no-cache`) and get a 304 while the content's hash is unchanged.
pub(super) async fn asset(
    Path(file): Path<String>,
    request: HeaderMap,
) -> Result<Response, AppError> {
    let index = ASSETS
        .iter()
        .position(|(name, ..)| *name == file)
        .ok_or(AppError::NotFound)?;
    let (_, content_type, body) = ASSETS[index];
    let etag = &etags()[index];
    let mut h = common_headers(content_type);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, etag.clone());
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    Ok(if fresh {
        (StatusCode::NOT_MODIFIED, h).into_response()
    } else {
        (h, body).into_response()
    })
}

/// Strong ETags of `ASSETS`, in order: a prefix of the content's SHA-256.
fn etags() -> &'static [HeaderValue] {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, body)| {
                let hash = hex::encode(&Sha256::digest(body.as_bytes())[..12]);
                HeaderValue::from_str(&format!("\"{hash}\"")).expect("hex is a valid header")
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(uri: &str, if_none_match: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::get(uri);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let resp = router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn page_is_html_with_a_strict_csp_and_no_caching() {
        let (status, h, body) = get("/ui/calls/0190abcd", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'; connect-src 'self' ws: wss:;"));
        assert!(body.contains(r#"<script src="/ui/assets/call.js" defer></script>"#));
        assert!(body.contains(r#"aria-live="polite""#));
        // Everything the page loads is ours; nothing inline for the CSP to block.
        assert!(!body.contains("http://") && !body.contains("https://"));
        assert!(!body.contains("<script>") && !body.contains("style="));
    }

    #[tokio::test]
    async fn assets_have_types_and_revalidate_by_etag() {
        for (file, content_type) in [
            ("call.js", "text/javascript; charset=utf-8"),
            ("call.css", "text/css; charset=utf-8"),
        ] {
            let uri = format!("/ui/assets/{file}");
            let (status, h, body) = get(&uri, None).await;
            assert_eq!(status, StatusCode::OK, "{file}");
            assert_eq!(h[header::CONTENT_TYPE], content_type);
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert!(!body.is_empty());
            let etag = h[header::ETAG].to_str().unwrap().to_string();
            let (status, h, body) = get(&uri, Some(&format!("\"x\", {etag}"))).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED);
            assert_eq!(h[header::ETAG], etag.as_str());
            assert!(body.is_empty());
            let (status, ..) = get(&uri, Some("\"stale\"")).await;
            assert_eq!(status, StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn the_login_form_escapes_what_it_echoes() {
        let resp = login_page(
            StatusCode::UNAUTHORIZED,
            "t\"><script>x</script>",
            "a&b@example.com",
            Some("No <b>way</b>"),
        );
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.starts_with("default-src 'self';") && csp.contains("form-action 'self'"));
        assert!(!csp.contains("unsafe"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains(r#"value="t&quot;&gt;&lt;script&gt;x&lt;/script&gt;""#));
        assert!(body.contains(r#"value="a&amp;b@example.com""#));
        assert!(body.contains("No &lt;b&gt;way&lt;/b&gt;"));
        assert!(!body.contains("<script>x"));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        for page in [SHELL, LOGIN] {
            assert!(!page.contains("<script>") && !page.contains("style="));
            assert!(!page.contains("http://") && !page.contains("https://"));
        }
    }

    #[tokio::test]
    async fn only_known_assets_are_served() {
        for uri in [
            "/ui/assets/call.html",
            "/ui/assets/..%2Fcall.html",
            "/ui/assets/..%2F..%2FCargo.toml",
            "/ui/assets/",
        ] {
            assert_eq!(get(uri, None).await.0, StatusCode::NOT_FOUND, "{uri}");
        }
    }
}
