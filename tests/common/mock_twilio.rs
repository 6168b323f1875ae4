//! A stand-in for Twilio's REST API on 127.0.0.1: real HTTP, Basic auth
//! checked, every request recorded (method, path, query, auth, form fields)
//! for the test to inspect, answers shaped like Twilio's (resource JSON,
//! error JSON `{code, message, more_info, status}`, 204 on delete, WAV media).
//!
//! Twilio's magic test numbers behave as at Twilio: provisioning
//! [`UNAVAILABLE_NUMBER`] fails with 21422, calling [`INVALID_TO`] with
//! 21211. Some SIDs are wired to failures (see the constants).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use futures::StreamExt as _;
use serde_json::json;
use tokio::net::TcpListener;
use url::Url;

use super::{ACCOUNT_SID, AUTH_TOKEN};

/// Provisioning it fails: 400, code 21422 (Twilio's magic number).
pub const UNAVAILABLE_NUMBER: &str = "+15005550000";
/// Calling it fails: 400, code 21211 (Twilio's magic number).
pub const INVALID_TO: &str = "+15005550001";
/// A call the mock does not know: 404, code 20404.
pub const UNKNOWN_CALL: &str = "CA00000000000000000000000000000000";
/// A call that has ended: looking it up answers `completed`.
pub const ENDED_CALL: &str = "CA22222222222222222222222222222222";
/// Updating it answers 500 with Twilio error JSON.
pub const FAILING_CALL: &str = "CA55555555555555555555555555555555";
/// Updating it answers 429 with `Retry-After: 3`.
pub const THROTTLED_CALL: &str = "CA44444444444444444444444444444444";
/// Updating it answers 503 with an HTML page (a proxy in the way).
pub const UNAVAILABLE_CALL: &str = "CA33333333333333333333333333333333";
/// A conference the mock does not know: 404.
pub const UNKNOWN_CONFERENCE: &str = "CF00000000000000000000000000000000";
/// A recording that does not exist: 404.
pub const MISSING_RECORDING: &str = "RE00000000000000000000000000000000";
/// A recording whose media is served by a second origin (302 redirect), like
/// Twilio's signed storage URLs; that origin refuses requests carrying
/// credentials.
pub const REDIRECTED_RECORDING: &str = "RE77777777777777777777777777777777";
/// A recording whose body stops after the first chunk and never ends.
pub const STALLING_RECORDING: &str = "RE88888888888888888888888888888888";
/// A recording whose first [`FLAKY_FAILURES`] downloads answer 503 (Twilio
/// error JSON), then the WAV: a provider having a bad minute.
pub const FLAKY_RECORDING: &str = "RE66666666666666666666666666666666";
pub const FLAKY_FAILURES: usize = 2;

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Decoded `Authorization: Basic` user and password.
    pub basic_auth: Option<(String, String)>,
    pub content_type: Option<String>,
    /// Form fields in body order (repeated keys kept).
    pub form: Vec<(String, String)>,
}

impl Recorded {
    /// Every value of a form field, in order.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of a form field (panics if absent or repeated).
    pub fn one(&self, key: &str) -> &str {
        let all = self.all(key);
        assert_eq!(all.len(), 1, "form field {key} in {:?}", self.form);
        all[0]
    }

    pub fn has(&self, key: &str) -> bool {
        self.form.iter().any(|(k, _)| k == key)
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Path below `/2010-04-01/Accounts/{ACCOUNT_SID}/`.
    pub fn account_path(&self) -> &str {
        self.path
            .strip_prefix(&format!("/2010-04-01/Accounts/{ACCOUNT_SID}/"))
            .unwrap_or(&self.path)
    }
}

struct MockState {
    requests: Mutex<Vec<Recorded>>,
    owned_numbers: Mutex<BTreeSet<String>>,
    next_call: AtomicU64,
    wav: Vec<u8>,
    cdn_base: String,
    cdn_requests: Mutex<Vec<Option<String>>>,
}

/// The mock API plus the "storage" origin recordings redirect to.
pub struct MockTwilio {
    pub base_url: Url,
    state: Arc<MockState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for MockTwilio {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl MockTwilio {
    /// Serves recordings with the bytes of `wav`.
    pub async fn start(wav: Vec<u8>) -> Self {
        let cdn_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cdn_base = format!("http://{}", cdn_listener.local_addr().unwrap());
        let state = Arc::new(MockState {
            requests: Mutex::new(Vec::new()),
            owned_numbers: Mutex::new(BTreeSet::new()),
            next_call: AtomicU64::new(1),
            wav,
            cdn_base,
            cdn_requests: Mutex::new(Vec::new()),
        });
        let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url =
            Url::parse(&format!("http://{}", api_listener.local_addr().unwrap())).unwrap();
        let api = Router::new()
            .fallback(api_handler)
            .with_state(state.clone());
        let cdn = Router::new()
            .fallback(cdn_handler)
            .with_state(state.clone());
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(api_listener, api).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(cdn_listener, cdn).await;
            }),
        ];
        Self {
            base_url,
            state,
            tasks,
        }
    }

    /// Requests received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The most recent request (panics if none).
    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("no request reached the mock")
    }

    /// The `Authorization` header of each request the storage origin got.
    pub fn storage_requests(&self) -> Vec<Option<String>> {
        self.state.cdn_requests.lock().unwrap().clone()
    }

    /// `https://api.twilio.com`-style media URL of a recording on this mock.
    pub fn recording_url(&self, recording_sid: &str) -> String {
        format!(
            "{}2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}",
            self.base_url
        )
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16(),
        })
        .to_string(),
    )
        .into_response()
}

fn not_found(path: &str) -> Response {
    twilio_error(
        StatusCode::NOT_FOUND,
        20404,
        &format!("The requested resource {path} was not found"),
    )
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let b64 = value.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (user, pass) = raw.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

const DATE: &str = "Tue, 31 Aug 2010 20:36:28 +0000";

fn call_json(sid: &str, status: &str, from: &str, to: &str) -> serde_json::Value {
    json!({
        "account_sid": ACCOUNT_SID,
        "annotation": null,
        "answered_by": null,
        "api_version": "2010-04-01",
        "caller_name": null,
        "date_created": DATE,
        "date_updated": DATE,
        "direction": "outbound-api",
        "duration": null,
        "end_time": null,
        "forwarded_from": null,
        "from": from,
        "from_formatted": from,
        "group_sid": null,
        "parent_call_sid": null,
        "phone_number_sid": "PNaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "start_time": null,
        "status": status,
        "subresource_uris": {
            "notifications": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}/Notifications.json"),
            "recordings": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}/Recordings.json"),
        },
        "to": to,
        "to_formatted": to,
        "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json"),
    })
}

fn number_json(sid: &str, number: &str, friendly: &str, voice_url: &str) -> serde_json::Value {
    json!({
        "account_sid": ACCOUNT_SID,
        "address_requirements": "none",
        "address_sid": null,
        "api_version": "2010-04-01",
        "beta": false,
        "capabilities": { "mms": true, "sms": true, "voice": true },
        "date_created": DATE,
        "date_updated": DATE,
        "emergency_status": "Inactive",
        "emergency_address_sid": null,
        "friendly_name": friendly,
        "identity_sid": null,
        "origin": "twilio",
        "phone_number": number,
        "sid": sid,
        "sms_application_sid": "",
        "sms_fallback_method": "POST",
        "sms_fallback_url": "",
        "sms_method": "POST",
        "sms_url": "",
        "status_callback": "",
        "status_callback_method": "POST",
        "trunk_sid": null,
        "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/IncomingPhoneNumbers/{sid}.json"),
        "voice_application_sid": "",
        "voice_caller_id_lookup": false,
        "voice_fallback_method": "POST",
        "voice_fallback_url": null,
        "voice_method": "POST",
        "voice_url": voice_url,
        "bundle_sid": null,
    })
}

async fn api_handler(State(state): State<Arc<MockState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let form: Vec<(String, String)> = if content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
    {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        Vec::new()
    };
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
        basic_auth: basic_auth(&parts.headers),
        content_type,
        form,
    };
    state.requests.lock().unwrap().push(recorded.clone());

    if recorded.basic_auth != Some((ACCOUNT_SID.to_string(), AUTH_TOKEN.to_string())) {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let prefix = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/");
    let Some(rest) = recorded.path.strip_prefix(&prefix) else {
        return not_found(&recorded.path);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let r = &recorded;
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["AvailablePhoneNumbers", "US", "Local.json"]) => json_response(
            StatusCode::OK,
            json!({
                "available_phone_numbers": [
                    {
                        "address_requirements": "none",
                        "beta": false,
                        "capabilities": { "mms": true, "sms": false, "voice": true },
                        "friendly_name": "(415) 555-0142",
                        "iso_country": "US",
                        "lata": "722",
                        "latitude": "37.770000",
                        "locality": "San Francisco",
                        "longitude": "-122.410000",
                        "phone_number": "+14155550142",
                        "postal_code": "94103",
                        "rate_center": "SNFC CA",
                        "region": "CA"
                    },
                    {
                        "address_requirements": "none",
                        "beta": false,
                        "capabilities": { "MMS": false, "SMS": true, "voice": true },
                        "friendly_name": "(415) 555-0199",
                        "iso_country": "US",
                        "lata": "722",
                        "latitude": "37.770000",
                        "locality": "",
                        "longitude": "-122.410000",
                        "phone_number": "+14155550199",
                        "postal_code": "94103",
                        "rate_center": "SNFC CA",
                        "region": "CA"
                    }
                ],
                "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/AvailablePhoneNumbers/US/Local.json"),
            }),
        ),
        (&Method::GET, ["AvailablePhoneNumbers", _, _]) => not_found(&r.path),
        (&Method::POST, ["IncomingPhoneNumbers.json"]) => {
            let Some(number) = r.all("PhoneNumber").first().map(|s| s.to_string()) else {
                return twilio_error(
                    StatusCode::BAD_REQUEST,
                    21421,
                    "PhoneNumber or AreaCode is required",
                );
            };
            if number == UNAVAILABLE_NUMBER {
                return twilio_error(
                    StatusCode::BAD_REQUEST,
                    21422,
                    &format!("Phone number {number} is not available"),
                );
            }
            let sid = format!("PN{:0>32}", number.trim_start_matches('+'));
            state.owned_numbers.lock().unwrap().insert(sid.clone());
            let friendly = r.all("FriendlyName").first().copied().unwrap_or("");
            let voice_url = r.all("VoiceUrl").first().copied().unwrap_or("");
            json_response(
                StatusCode::CREATED,
                number_json(&sid, &number, friendly, voice_url),
            )
        }
        (&Method::DELETE, ["IncomingPhoneNumbers", file]) => {
            let sid = file.trim_end_matches(".json");
            if state.owned_numbers.lock().unwrap().remove(sid) {
                StatusCode::NO_CONTENT.into_response()
            } else {
                not_found(&r.path)
            }
        }
        (&Method::POST, ["Calls.json"]) => {
            let to = r.all("To").first().copied().unwrap_or("").to_string();
            let from = r.all("From").first().copied().unwrap_or("").to_string();
            if to == INVALID_TO {
                return twilio_error(
                    StatusCode::BAD_REQUEST,
                    21211,
                    &format!("The 'To' number {to} is not a valid phone number."),
                );
            }
            let n = state.next_call.fetch_add(1, Ordering::Relaxed);
            let sid = format!("CA{n:0>32x}");
            json_response(StatusCode::CREATED, call_json(&sid, "queued", &from, &to))
        }
        // Any other call exists and is live: streams in tests use made-up
        // SIDs, and the gateway looks unannounced calls up here.
        (&Method::GET, ["Calls", file]) => match file.trim_end_matches(".json") {
            UNKNOWN_CALL => not_found(&r.path),
            UNAVAILABLE_CALL => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>503 Service Unavailable</h1></body></html>",
            )
                .into_response(),
            ENDED_CALL => json_response(
                StatusCode::OK,
                call_json(ENDED_CALL, "completed", "+14155550100", "+14155552671"),
            ),
            sid => json_response(
                StatusCode::OK,
                call_json(sid, "in-progress", "+14155550100", "+14155552671"),
            ),
        },
        (&Method::POST, ["Calls", file]) => {
            let sid = file.trim_end_matches(".json");
            match sid {
                UNKNOWN_CALL => not_found(&r.path),
                FAILING_CALL => twilio_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    20500,
                    "An internal server error has occurred",
                ),
                THROTTLED_CALL => {
                    let mut resp =
                        twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, "3".parse().unwrap());
                    resp
                }
                UNAVAILABLE_CALL => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, "text/html")],
                    "<html><body><h1>503 Service Unavailable</h1></body></html>",
                )
                    .into_response(),
                _ => {
                    let status = match r.all("Status").first().copied() {
                        Some("completed") => "completed",
                        Some("canceled") => "canceled",
                        _ => "in-progress",
                    };
                    json_response(
                        StatusCode::OK,
                        call_json(sid, status, "+14155550100", "+14155552671"),
                    )
                }
            }
        }
        (&Method::POST, ["Conferences", conf, "Participants", file]) => {
            if *conf == UNKNOWN_CONFERENCE {
                return not_found(&r.path);
            }
            let call = file.trim_end_matches(".json");
            let flag = |k: &str| r.all(k).first().is_some_and(|v| *v == "true");
            json_response(
                StatusCode::OK,
                json!({
                    "account_sid": ACCOUNT_SID,
                    "call_sid": call,
                    "label": null,
                    "call_sid_to_coach": null,
                    "coaching": false,
                    "conference_sid": conf,
                    "date_created": DATE,
                    "date_updated": DATE,
                    "end_conference_on_exit": false,
                    "muted": flag("Muted"),
                    "hold": flag("Hold"),
                    "status": "connected",
                    "start_conference_on_enter": true,
                    "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Conferences/{conf}/Participants/{call}.json"),
                }),
            )
        }
        (&Method::GET, ["Recordings", file]) => {
            let sid = file.trim_end_matches(".wav");
            match sid {
                MISSING_RECORDING => not_found(&r.path),
                REDIRECTED_RECORDING => (
                    StatusCode::FOUND,
                    [(
                        header::LOCATION,
                        format!("{}/media/{sid}.wav?Expires=1&Signature=abc", state.cdn_base),
                    )],
                )
                    .into_response(),
                FLAKY_RECORDING
                    if state
                        .requests
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|q| q.path == r.path)
                        .count()
                        <= FLAKY_FAILURES =>
                {
                    twilio_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        20500,
                        "Service unavailable",
                    )
                }
                STALLING_RECORDING => {
                    let first = Bytes::copy_from_slice(&state.wav[..4096]);
                    let stream =
                        futures::stream::once(async move { Ok::<_, std::io::Error>(first) })
                            .chain(futures::stream::pending());
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "audio/x-wav")],
                        Body::from_stream(stream),
                    )
                        .into_response()
                }
                _ => wav_response(&state.wav),
            }
        }
        _ => not_found(&r.path),
    }
}

/// Sends the WAV in several chunks, like a real download.
fn wav_response(wav: &[u8]) -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = wav
        .chunks(16 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "audio/x-wav".to_string()),
            (header::CONTENT_LENGTH, wav.len().to_string()),
        ],
        Body::from_stream(futures::stream::iter(chunks)),
    )
        .into_response()
}

/// The storage origin: like a signed object-store URL, it refuses requests
/// that carry credentials.
async fn cdn_handler(State(state): State<Arc<MockState>>, req: Request) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    state.cdn_requests.lock().unwrap().push(auth.clone());
    if auth.is_some() {
        return (StatusCode::BAD_REQUEST, "credentials sent to storage").into_response();
    }
    wav_response(&state.wav)
}

/// A TCP server that accepts connections and never answers.
pub async fn silent_server() -> (Url, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    (url, task)
}
