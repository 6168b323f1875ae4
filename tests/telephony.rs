//! Phone numbers, Twilio webhooks, usage and quotas, end to end: a real
//! gateway on 127.0.0.1, Twilio's REST API played by `MockTwilio`, and
//! webhooks signed here from the algorithm's definition (HMAC-SHA1 over the
//! URL and the sorted form fields; `bodySHA256` for JSON bodies), not with
//! the gateway's own signing code.

mod common;

use base64::Engine as _;
use callstream::store::TenantSettings;
use common::mock_twilio::{
    silent_server, MockTwilio, ENDED_CALL, UNAVAILABLE_CALL, UNAVAILABLE_NUMBER, UNKNOWN_CALL,
};
use common::{eventually, expect_close, http, metric, Call, TestServer, ACCOUNT_SID, AUTH_TOKEN};
use futures::SinkExt;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Digest;

const NUMBER: &str = "+14155552671";
const CALLER: &str = "+14155550100";
const VOICE: &str = "/v1/providers/twilio/voice";
const STATUS: &str = "/v1/providers/twilio/status";

/// `base64(HMAC-SHA1(token, url + k1 + v1 + k2 + v2 …))`, keys sorted.
fn twilio_signature(token: &str, url: &str, fields: &[(&str, &str)]) -> String {
    let mut sorted = fields.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn start(mock: &MockTwilio) -> TestServer {
    let base = mock.base_url.clone();
    TestServer::start_with(move |cfg| cfg.providers.twilio.api_base_url = base).await
}

fn url(server: &TestServer, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

/// POSTs a form as Twilio does; `sig` is the X-Twilio-Signature to send.
async fn post_form(
    server: &TestServer,
    path: &str,
    fields: &[(&str, &str)],
    sig: Option<&str>,
    idempotency: Option<&str>,
) -> (u16, String) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut req = reqwest::Client::new()
        .post(url(server, path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(sig) = sig {
        req = req.header("X-Twilio-Signature", sig);
    }
    if let Some(token) = idempotency {
        req = req.header("I-Twilio-Idempotency-Token", token);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Signed with the tenant's auth token over the URL Twilio would call.
async fn signed(server: &TestServer, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let sig = twilio_signature(AUTH_TOKEN, &url(server, path), fields);
    post_form(server, path, fields, Some(&sig), None).await
}

/// The fields Twilio posts to a number's voice URL.
fn voice_fields<'a>(call_sid: &'a str, to: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Called", to),
        ("CalledCity", "SAN FRANCISCO"),
        ("CalledCountry", "US"),
        ("CalledState", "CA"),
        ("Caller", CALLER),
        ("CallerCountry", "US"),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("FromCountry", "US"),
        ("FromState", "CA"),
        ("To", to),
        ("ToCountry", "US"),
        ("ToState", "CA"),
    ]
}

/// A call status callback as Twilio sends it.
fn status_fields<'a>(call_sid: &'a str, status: &'a str, seq: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", status),
        ("CallbackSource", "call-progress-events"),
        ("Called", NUMBER),
        ("Caller", CALLER),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("SequenceNumber", seq),
        ("Timestamp", "Thu, 26 Nov 2026 04:00:00 +0000"),
        ("To", NUMBER),
    ]
}

async fn buy_number(server: &TestServer, number: &str) -> Value {
    let (status, body) = http(
        server.addr,
        "POST",
        "/v1/phone-numbers",
        Some(&server.api_key),
        Some(&json!({ "number": number })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn set_settings(server: &TestServer, f: impl FnOnce(&mut TenantSettings)) {
    let mut s = TenantSettings::default();
    f(&mut s);
    server
        .store
        .set_tenant_settings(&server.tenant_id, &s)
        .await
        .unwrap();
}

fn new_sid(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// The value of `<Parameter name="token" value="…"/>`.
fn token_in(twiml: &str) -> String {
    let start = twiml
        .find(r#"name="token" value=""#)
        .expect("token parameter")
        + 20;
    twiml[start..][..twiml[start..].find('"').unwrap()].to_string()
}

async fn call_by_sid(server: &TestServer, sid: &str) -> Value {
    let (_, page) = server.get("/v1/calls?limit=500").await;
    let id = page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["external_call_id"] == sid)
        .unwrap_or_else(|| panic!("no call {sid}: {page}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    server.get(&format!("/v1/calls/{id}")).await.1
}

#[tokio::test]
async fn numbers_are_bought_listed_and_released_through_the_provider() {
    let mock = MockTwilio::start(Vec::new()).await;
    let server = start(&mock).await;
    // Human formatting is normalised to E.164.
    let n = buy_number(&server, "+1 (415) 555-2671").await;
    assert_eq!(n["number"], NUMBER);
    assert_eq!(n["status"], "active");
    assert_eq!(n["provider"], "twilio");
    assert!(n["provider_id"].as_str().unwrap().starts_with("PN"));
    let req = mock.last();
    assert_eq!(
        (req.method.as_str(), req.account_path()),
        ("POST", "IncomingPhoneNumbers.json")
    );
    assert_eq!(
        req.basic_auth,
        Some((ACCOUNT_SID.into(), AUTH_TOKEN.into()))
    );
    assert_eq!(req.one("PhoneNumber"), NUMBER);
    assert_eq!(req.one("VoiceUrl"), url(&server, VOICE));
    assert_eq!(req.one("StatusCallback"), url(&server, STATUS));

    let (status, list) = server.get("/v1/phone-numbers").await;
    assert_eq!(status, 200);
    assert_eq!(list["phone_numbers"].as_array().unwrap().len(), 1);
    // Owned already: 409, and the provider is not asked again.
    let asked = mock.requests().len();
    let (status, body) = http(
        server.addr,
        "POST",
        "/v1/phone-numbers",
        Some(&server.api_key),
        Some(&json!({"number": "0014155552671"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(mock.requests().len(), asked);

    let path = format!("/v1/phone-numbers/{}", n["id"].as_str().unwrap());
    let (status, _) = http(server.addr, "DELETE", &path, Some(&server.api_key), None).await;
    assert_eq!(status, 204);
    let req = mock.last();
    assert_eq!(req.method, "DELETE");
    assert_eq!(
        req.account_path(),
        format!(
            "IncomingPhoneNumbers/{}.json",
            n["provider_id"].as_str().unwrap()
        )
    );
    let (_, list) = server.get("/v1/phone-numbers").await;
    assert_eq!(list["phone_numbers"], json!([]));
    let (status, body) = http(server.addr, "DELETE", &path, Some(&server.api_key), None).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn bad_numbers_and_provider_failures_leave_nothing_behind() {
    let mock = MockTwilio::start(Vec::new()).await;
    let server = start(&mock).await;
    let post = |body: Value| {
        let (addr, key) = (server.addr, server.api_key.clone());
        async move { http(addr, "POST", "/v1/phone-numbers", Some(&key), Some(&body)).await }
    };
    for bad in [
        "4155552671",
        "+1415",
        "+1 415 CALL NOW",
        "+0044123456789",
        "",
    ] {
        let (status, body) = post(json!({ "number": bad })).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("number:"),
            "{body}"
        );
    }
    let (status, body) = post(json!({"number": NUMBER, "area_code": "415"})).await;
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("area_code"),
        "{body}"
    );
    let (status, _) = post(json!({"number": 14155552671u64})).await;
    assert!(status == 400 || status == 422);
    assert!(mock.requests().is_empty(), "nothing reached the provider");

    // The provider refuses (Twilio 21422): 422 with its code, no row.
    let (status, body) = post(json!({ "number": UNAVAILABLE_NUMBER })).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "provider_rejected");
    assert_eq!(body["error"]["provider_code"], 21422);
    let (_, list) = server.get("/v1/phone-numbers").await;
    assert_eq!(list["phone_numbers"], json!([]));

    // A provider that never answers: 504, no row, and the number can be
    // tried again.
    let (silent, _task) = silent_server().await;
    let slow = TestServer::start_with(move |cfg| {
        cfg.providers.twilio.api_base_url = silent;
        cfg.providers.twilio.request_timeout_ms = 300;
    })
    .await;
    let (status, body) = http(
        slow.addr,
        "POST",
        "/v1/phone-numbers",
        Some(&slow.api_key),
        Some(&json!({ "number": NUMBER })),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "provider_timeout");
    let (_, list) = slow.get("/v1/phone-numbers").await;
    assert_eq!(list["phone_numbers"], json!([]));

    // A tenant without a Twilio account cannot buy numbers.
    let bare = server.store.create_tenant("Bare", None).await.unwrap();
    let admin = server
        .store
        .create_user(&bare.id, "root", None, callstream::store::Role::Admin)
        .await
        .unwrap();
    let (status, body) = http(
        server.addr,
        "POST",
        "/v1/phone-numbers",
        Some(admin.key.plaintext.expose()),
        Some(&json!({ "number": "+14155550199" })),
    )
    .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn an_inbound_call_is_answered_with_consent_and_a_tokened_stream() {
    let mock = MockTwilio::start(Vec::new()).await;
    let server = start(&mock).await;
    buy_number(&server, NUMBER).await;
    set_settings(&server, |s| {
        s.consent_announcement = Some("This call is recorded & transcribed.".into())
    })
    .await;
    let sid = new_sid("CA");
    let fields = voice_fields(&sid, NUMBER);
    let (status, twiml) = signed(&server, VOICE, &fields).await;
    assert_eq!(status, 200, "{twiml}");
    assert!(twiml.starts_with("<?xml"), "{twiml}");
    let say = twiml.find("<Say>This call is recorded &amp; transcribed.</Say>");
    let connect = twiml.find("<Connect><Stream");
    assert!(say.is_some() && connect > say, "{twiml}");
    let stream_url = format!("ws://{}/v1/providers/twilio/stream", server.addr);
    assert!(twiml.contains(&format!(r#"url="{stream_url}""#)), "{twiml}");
    assert!(
        twiml.contains(&format!(r#"statusCallback="{}""#, url(&server, STATUS))),
        "{twiml}"
    );
    assert!(
        twiml.contains(r#"<Parameter name="direction" value="inbound"/>"#),
        "{twiml}"
    );
    let token = token_in(&twiml);

    // The call is recorded as ringing, inbound, with both parties.
    let call = call_by_sid(&server, &sid).await;
    assert_eq!(call["status"], "ringing");
    assert_eq!(call["direction"], "inbound");
    assert_eq!(call["from_number"], CALLER);
    assert_eq!(call["to_number"], NUMBER);
    assert!(call["logs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["event"] == "call_answered" && l["detail"]["announcement"] == true));

    // Twilio retries the webhook: same answer, still one call, one log.
    let (status, again) = signed(&server, VOICE, &fields).await;
    assert_eq!(status, 200);
    assert!(again.contains("<Connect><Stream"));

    // The stream the TwiML asks for, authenticated by the token alone.
    let mut ws = server.connect_with(None).await.unwrap();
    let mut stream_call = Call::new();
    stream_call.call_sid = sid.clone();
    ws.send(stream_call.start(&[("token", token.as_str()), ("direction", "inbound")]))
        .await
        .unwrap();
    let id = call["id"].as_str().unwrap().to_string();
    eventually(|| {
        let open = server.state.sessions.open_calls();
        let id = id.clone();
        async move { open.iter().any(|(_, c)| *c == id) }
    })
    .await;
    let call = call_by_sid(&server, &sid).await;
    assert_eq!(call["status"], "in_progress");
    let answered = call["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["event"] == "call_answered")
        .count();
    assert_eq!(answered, 1);
    let (_, page) = server.get("/v1/calls").await;
    assert_eq!(page["calls"].as_array().unwrap().len(), 1);

    // A token for this call does not open another call's stream.
    let mut ws2 = server.connect_with(None).await.unwrap();
    let mut other = Call::new();
    ws2.send(other.start(&[("token", token.as_str())]))
        .await
        .unwrap();
    let (code, reason) = expect_close(&mut ws2).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("another call"), "{reason}");
    ws.send(stream_call.stop()).await.unwrap();
    expect_close(&mut ws).await;

    // A call placed from our number (outbound, answered by the callee) is
    // routed by its From and streamed the same way.
    let out_sid = new_sid("CA");
    let mut fields = voice_fields(&out_sid, CALLER);
    for (k, v) in fields.iter_mut() {
        match *k {
            "Direction" => *v = "outbound-api",
            "From" | "Caller" => *v = NUMBER,
            "CallStatus" => *v = "in-progress",
            _ => {}
        }
    }
    let (status, twiml) = signed(&server, VOICE, &fields).await;
    assert_eq!(status, 200);
    assert!(
        twiml.contains(r#"<Parameter name="direction" value="outbound"/>"#),
        "{twiml}"
    );
    let call = call_by_sid(&server, &out_sid).await;
    assert_eq!(
        (call["direction"].as_str(), call["status"].as_str()),
        (Some("outbound"), Some("in_progress"))
    );
}

#[tokio::test]
async fn webhooks_must_be_signed_by_the_tenant_and_routed() {
    let mock = MockTwilio::start(Vec::new()).await;
    let server = start(&mock).await;
    buy_number(&server, NUMBER).await;
    let sid = new_sid("CA");
    let fields = voice_fields(&sid, NUMBER);
    let good = twilio_signature(AUTH_TOKEN, &url(&server, VOICE), &fields);

    // Unsigned, signed with another token, or for another URL: 403 JSON.
    let wrong_token = twilio_signature(
        "0000feedf00dfeedf00dfeedf00dfeed",
        &url(&server, VOICE),
        &fields,
    );
    let wrong_url = twilio_signature(AUTH_TOKEN, &url(&server, STATUS), &fields);
    for sig in [
        None,
        Some(wrong_token.as_str()),
        Some(wrong_url.as_str()),
        Some("garbage"),
    ] {
        let (status, body) = post_form(&server, VOICE, &fields, sig, None).await;
        assert_eq!(status, 403, "{sig:?}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    // A field changed after signing.
    let mut tampered = fields.clone();
    tampered.retain(|(k, _)| *k != "From");
    tampered.push(("From", "+14155550111"));
    let (status, _) = post_form(&server, VOICE, &tampered, Some(&good), None).await;
    assert_eq!(status, 403);
    // An account no tenant has: answered like a bad signature.
    let mut foreign = fields.clone();
    foreign[0] = ("AccountSid", "ACffffffffffffffffffffffffffffffff");
    let sig = twilio_signature(AUTH_TOKEN, &url(&server, VOICE), &foreign);
    let (status, _) = post_form(&server, VOICE, &foreign, Some(&sig), None).await;
    assert_eq!(status, 403);
    // Signed but malformed: 400.
    let mut malformed = fields.clone();
    malformed.retain(|(k, _)| *k != "CallSid");
    let (status, body) = signed(&server, VOICE, &malformed).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("CallSid"), "{body}");
    let (_, page) = server.get("/v1/calls").await;
    assert_eq!(
        page["calls"],
        json!([]),
        "nothing written for refused webhooks"
    );

    // A number not routed here: turned away without answering.
    let (status, twiml) = signed(&server, VOICE, &voice_fields(&sid, "+14155550999")).await;
    assert_eq!(status, 200);
    assert!(twiml.contains(r#"<Reject reason="rejected"/>"#), "{twiml}");

    // Properly signed: answered.
    let (status, twiml) = post_form(&server, VOICE, &fields, Some(&good), None).await;
    assert_eq!(status, 200);
    assert!(twiml.contains("<Connect>"));

    // Replayed after the call ended: turned away, nothing reopened.
    let mut done = status_fields(&sid, "completed", "4");
    done.push(("CallDuration", "30"));
    assert_eq!(signed(&server, STATUS, &done).await.0, 204);
    let (status, twiml) = post_form(&server, VOICE, &fields, Some(&good), None).await;
    assert_eq!(status, 200);
    assert!(twiml.contains("<Reject"), "{twiml}");
    assert_eq!(call_by_sid(&server, &sid).await["status"], "completed");
}

#[tokio::test]
async fn json_bodies_and_default_ports_verify_as_twilio_signs_them() {
    let mock = MockTwilio::start(Vec::new()).await;
    let base = mock.base_url.clone();
    // Behind a proxy: Twilio calls https://gw.example.com, we listen locally.
    let server = TestServer::start_with(move |cfg| {
        cfg.providers.twilio.api_base_url = base;
        cfg.public_url = Some(url::Url::parse("https://gw.example.com").unwrap());
    })
    .await;
    let sid = new_sid("CA");
    let fields = status_fields(&sid, "ringing", "1");
    let mut with_dir = fields.clone();
    with_dir.retain(|(k, _)| *k != "Direction");
    with_dir.push(("Direction", "outbound-api"));
    // Signed over the URL with the explicit default port, as Twilio does
    // when the number's URL was configured with it.
    let sig = twilio_signature(
        AUTH_TOKEN,
        &format!("https://gw.example.com:443{STATUS}"),
        &with_dir,
    );
    let (status, body) = post_form(&server, STATUS, &with_dir, Some(&sig), None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(call_by_sid(&server, &sid).await["direction"], "outbound");
    // The local address is not what Twilio signs.
    let sig = twilio_signature(AUTH_TOKEN, &url(&server, STATUS), &fields);
    assert_eq!(
        post_form(&server, STATUS, &fields, Some(&sig), None)
            .await
            .0,
        403
    );

    // JSON body: the URL carries bodySHA256 and the signature covers the URL
    // alone. Ours verifies (then is refused as not a form: 400); a body that
    // does not match its hash, or a bad signature, is 403.
    let body =
        json!({"AccountSid": ACCOUNT_SID, "CallSid": sid, "CallStatus": "completed"}).to_string();
    let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    let path = format!("{STATUS}?bodySHA256={hash}");
    let send_json = |body: String, sig: String| {
        let target = format!("http://{}{path}", server.addr);
        async move {
            let resp = reqwest::Client::new()
                .post(target)
                .header("content-type", "application/json")
                .header("X-Twilio-Signature", sig)
                .body(body)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }
    };
    let sig = twilio_signature(AUTH_TOKEN, &format!("https://gw.example.com{path}"), &[]);
    assert_eq!(send_json(body.clone(), sig.clone()).await, 400);
    assert_eq!(
        send_json(body.replace("completed", "canceled"), sig).await,
        403
    );
    let bad = twilio_signature("x", &format!("https://gw.example.com{path}"), &[]);
    assert_eq!(send_json(body, bad).await, 403);
    assert_eq!(call_by_sid(&server, &sid).await["status"], "ringing");
}

#[tokio::test]
async fn status_callbacks_are_ordered_and_deduplicated() {
    let mock = MockTwilio::start(Vec::new()).await;
    let server = start(&mock).await;
    buy_number(&server, NUMBER).await;
    let sid = new_sid("CA");
    assert_eq!(
        signed(&server, VOICE, &voice_fields(&sid, NUMBER)).await.0,
        200
    );

    let send = |status: &'static str,
                seq: &'static str,
                idem: &'static str,
                extra: Vec<(&'static str, &'static str)>| {
        let mut fields = status_fields(&sid, status, seq);
        fields.extend(extra);
        let sig = twilio_signature(AUTH_TOKEN, &url(&server, STATUS), &fields);
        let server = &server;
        async move {
            post_form(server, STATUS, &fields, Some(&sig), Some(idem))
                .await
                .0
        }
    };
    // Answered, then completed; the answer is delivered again, late.
    assert_eq!(send("in-progress", "2", "idem-2", vec![]).await, 204);
    let completed = vec![
        ("CallDuration", "42"),
        ("Duration", "1"),
        ("SipResponseCode", "200"),
    ];
    assert_eq!(
        send("completed", "3", "idem-3", completed.clone()).await,
        204
    );
    assert_eq!(send("ringing", "1", "idem-1", vec![]).await, 204);
    assert_eq!(send("in-progress", "2", "idem-2", vec![]).await, 204);
    // Redelivered with a new token but the same event: still a duplicate.
    assert_eq!(send("completed", "3", "idem-3b", completed).await, 204);

    let call = call_by_sid(&server, &sid).await;
    assert_eq!(call["status"], "completed");
    assert_eq!(call["duration_ms"], 42_000);
    assert!(
        call["answered_at"].is_i64() && call["ended_at"].is_i64(),
        "{call}"
    );
    let logs: Vec<&Value> = call["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["event"] == "provider_status")
        .collect();
    // One per distinct event: in-progress, completed, late ringing.
    assert_eq!(logs.len(), 3, "{logs:?}");
    assert_eq!(logs[2]["detail"]["status"], "ringing");
    assert_eq!(logs[2]["detail"]["applied"], false);
    assert_eq!(logs[2]["detail"]["call_status"], "completed");
    let m = server.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"callstream_webhooks_total{kind="call",outcome="duplicate"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            r#"callstream_webhooks_total{kind="call",outcome="out_of_order"}"#
        ),
        1.0
    );

    // Stream and recording callbacks land in the call log, once each.
    let stream_sid = new_sid("MZ");
    let stream_fields = vec![
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", sid.as_str()),
        ("StreamSid", stream_sid.as_str()),
        ("StreamName", "main"),
        ("StreamEvent", "stream-error"),
        ("StreamError", "Stream - WebSocket - Connection Refused"),
        ("Timestamp", "2026-11-26T04:00:05.000Z"),
    ];
    for _ in 0..2 {
        assert_eq!(signed(&server, STATUS, &stream_fields).await.0, 204);
    }
    let rec_sid = new_sid("RE");
    let rec_url = mock.recording_url(&rec_sid);
    let rec_fields = vec![
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", sid.as_str()),
        ("RecordingSid", rec_sid.as_str()),
        ("RecordingUrl", rec_url.as_str()),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "41"),
        ("RecordingChannels", "2"),
        ("RecordingSource", "StartCallRecordingAPI"),
        ("RecordingStartTime", "Thu, 26 Nov 2026 04:00:01 +0000"),
        ("ErrorCode", "0"),
    ];
    assert_eq!(signed(&server, STATUS, &rec_fields).await.0, 204);
    let call = call_by_sid(&server, &sid).await;
    let logs = call["logs"].as_array().unwrap();
    let stream_logs: Vec<_> = logs
        .iter()
        .filter(|l| l["event"] == "provider_stream_failed")
        .collect();
    assert_eq!(stream_logs.len(), 1);
    assert_eq!(stream_logs[0]["detail"]["stream_sid"], stream_sid.as_str());
    assert!(stream_logs[0]["detail"]["error"]
        .as_str()
        .unwrap()
        .contains("Refused"));
    let rec = logs
        .iter()
        .find(|l| l["event"] == "provider_recording")
        .expect("recording logged");
    assert_eq!(rec["detail"]["recording_sid"], rec_sid.as_str());
    assert_eq!(rec["detail"]["duration_secs"], 41);
    assert_eq!(rec["detail"]["url"], rec_url.as_str());
}

/// One captured `X-Twilio-Signature` covers the stream URL only, so it
/// must not let a client invent calls: a signed stream without a token
/// creates a call only when our voice webhook announced it, or Twilio's
/// REST API says it is live.
#[tokio::test]
async fn a_signed_stream_creates_a_call_only_when_the_call_is_known() {
    let mock = MockTwilio::start(Vec::new()).await;
    let server = start(&mock).await;
    buy_number(&server, NUMBER).await;
    let lookups = |sid: &str| {
        let path = format!("Calls/{sid}.json");
        mock.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.account_path() == path)
            .count()
    };
    let stream = |sid: String| {
        let server = &server;
        async move {
            let mut ws = server.connect_signed().await;
            let mut call = Call::new();
            call.call_sid = sid;
            ws.send(call.start(&[])).await.unwrap();
            common::send_audio(&mut ws, &mut call, &common::jfk_frames()[..25]).await;
            ws.send(call.stop()).await.unwrap();
            expect_close(&mut ws).await
        }
    };

    // Unknown at Twilio, ended there, or Twilio not answering: refused,
    // nothing written.
    for (sid, code, reason, metric_reason) in [
        (UNKNOWN_CALL, 1008, "unknown call", "unknown_call"),
        (ENDED_CALL, 1008, "the call has ended", "call_ended"),
        (
            UNAVAILABLE_CALL,
            1013,
            "temporarily unable",
            "call_unverified",
        ),
    ] {
        let (got, why) = stream(sid.to_string()).await;
        assert_eq!(got, code, "{sid}: {why}");
        assert!(why.contains(reason), "{sid}: {why}");
        assert_eq!(lookups(sid), 1, "{sid} looked up once");
        let m = server.metrics().await;
        assert_eq!(
            metric(
                &m,
                &format!("callstream_stream_rejections_total{{reason=\"{metric_reason}\"}}")
            ),
            1.0
        );
    }
    let (_, page) = server.get("/v1/calls").await;
    assert_eq!(page["calls"], json!([]), "refused streams write no call");

    // Announced by our voice webhook: streamed without asking Twilio.
    let announced = new_sid("CA");
    let (status, _) = signed(&server, VOICE, &voice_fields(&announced, NUMBER)).await;
    assert_eq!(status, 200);
    assert_eq!(stream(announced.clone()).await.0, 1000);
    assert_eq!(lookups(&announced), 0);
    // Never announced here but live at Twilio: verified, then streamed.
    let verified = new_sid("CA");
    assert_eq!(stream(verified.clone()).await.0, 1000);
    assert_eq!(lookups(&verified), 1);
    let (_, page) = server.get("/v1/calls").await;
    let mut sids: Vec<&str> = page["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["external_call_id"].as_str().unwrap())
        .collect();
    sids.sort_unstable();
    let mut expected = vec![announced.as_str(), verified.as_str()];
    expected.sort_unstable();
    assert_eq!(sids, expected);
}

#[tokio::test]
async fn quotas_turn_calls_and_streams_away() {
    let mock = MockTwilio::start(Vec::new()).await;
    let server = start(&mock).await;
    buy_number(&server, NUMBER).await;
    set_settings(&server, |s| s.quotas.max_concurrent_streams = Some(1)).await;

    let mut first = server.connect_signed().await;
    let mut call = Call::new();
    first.send(call.start(&[])).await.unwrap();
    eventually(|| {
        let n = server.state.sessions.tenant_streams(&server.tenant_id);
        async move { n == 1 }
    })
    .await;

    // A second stream is closed with the reason.
    let mut second = server.connect_signed().await;
    second.send(Call::new().start(&[])).await.unwrap();
    assert_eq!(
        expect_close(&mut second).await,
        (1008, "quota exceeded: concurrent streams".to_string())
    );
    // A new call is told politely and hung up.
    let sid = new_sid("CA");
    let (status, twiml) = signed(&server, VOICE, &voice_fields(&sid, NUMBER)).await;
    assert_eq!(status, 200);
    assert!(
        twiml.contains("cannot take your call") && twiml.contains("<Hangup/>"),
        "{twiml}"
    );
    assert!(!twiml.contains("<Stream"));
    let logged = call_by_sid(&server, &sid).await;
    assert!(logged["logs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["event"] == "call_rejected" && l["detail"]["quota"] == "concurrent_streams"));
    let m = server.metrics().await;
    let q = |at: &str| {
        metric(
            &m,
            &format!(
                r#"callstream_quota_rejections_total{{at="{at}",quota="concurrent_streams"}}"#
            ),
        )
    };
    assert_eq!((q("stream_start"), q("call_answer")), (1.0, 1.0));

    // The first stream ends: room again.
    first.send(call.stop()).await.unwrap();
    expect_close(&mut first).await;
    eventually(|| {
        let n = server.state.sessions.tenant_streams(&server.tenant_id);
        async move { n == 0 }
    })
    .await;
    let (_, twiml) = signed(&server, VOICE, &voice_fields(&new_sid("CA"), NUMBER)).await;
    assert!(twiml.contains("<Connect>"), "{twiml}");

    // No transcription minutes left this month: calls that would be
    // transcribed are turned away; with live transcription off they are not.
    set_settings(&server, |s| {
        s.quotas.monthly_transcription_minutes = Some(0)
    })
    .await;
    let (_, twiml) = signed(&server, VOICE, &voice_fields(&new_sid("CA"), NUMBER)).await;
    assert!(twiml.contains("<Hangup/>"), "{twiml}");
    let mut s3 = server.connect_signed().await;
    s3.send(Call::new().start(&[])).await.unwrap();
    assert_eq!(
        expect_close(&mut s3).await,
        (
            1008,
            "quota exceeded: monthly transcription minutes".to_string()
        )
    );
    set_settings(&server, |s| {
        s.quotas.monthly_transcription_minutes = Some(0);
        s.transcribe_live = false;
    })
    .await;
    let (_, twiml) = signed(&server, VOICE, &voice_fields(&new_sid("CA"), NUMBER)).await;
    assert!(twiml.contains("<Connect>"), "{twiml}");
    let m = server.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"callstream_quota_rejections_total{at="call_answer",quota="transcription_minutes"}"#
        ),
        1.0
    );

    // The check transcription jobs call before queueing: 429 while the
    // minutes are used up (whatever `transcribe_live` says), fine otherwise.
    let err = callstream::api::quota::check_transcription_job(&server.state, &server.tenant_id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, callstream::api::AppError::QuotaExceeded(_)),
        "{err}"
    );
    let m = server.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"callstream_quota_rejections_total{at="job_create",quota="transcription_minutes"}"#
        ),
        1.0
    );
    set_settings(&server, |s| {
        s.quotas.monthly_transcription_minutes = Some(10)
    })
    .await;
    callstream::api::quota::check_transcription_job(&server.state, &server.tenant_id)
        .await
        .unwrap();
}

#[tokio::test]
async fn usage_reports_minutes_and_the_stream_peak() {
    let mock = MockTwilio::start(Vec::new()).await;
    let server = start(&mock).await;
    buy_number(&server, NUMBER).await;
    // Two inbound calls of 90 s and 30 s, one outbound of 60 s.
    for (dir, secs) in [("inbound", "90"), ("inbound", "30"), ("outbound-api", "60")] {
        let sid = new_sid("CA");
        let mut fields = status_fields(&sid, "completed", "5");
        fields.retain(|(k, _)| *k != "Direction");
        fields.push(("Direction", dir));
        fields.push(("CallDuration", secs));
        assert_eq!(signed(&server, STATUS, &fields).await.0, 204);
    }
    // Two streams open at once.
    let mut a = server.connect_signed().await;
    let mut b = server.connect_signed().await;
    let (mut ca, mut cb) = (Call::new(), Call::new());
    a.send(ca.start(&[])).await.unwrap();
    b.send(cb.start(&[])).await.unwrap();
    eventually(|| {
        let n = server.state.sessions.tenant_streams(&server.tenant_id);
        async move { n == 2 }
    })
    .await;
    a.send(ca.stop()).await.unwrap();
    b.send(cb.stop()).await.unwrap();
    expect_close(&mut a).await;
    expect_close(&mut b).await;
    // The sessions wind down (and give their slots back) after the close.
    eventually(|| {
        let n = server.state.sessions.tenant_streams(&server.tenant_id);
        async move { n == 0 }
    })
    .await;

    let (status, u) = server.get("/v1/usage").await;
    assert_eq!(status, 200, "{u}");
    // The two streamed calls count as inbound too (a few ms each).
    assert_eq!(u["calls"]["inbound"]["count"], 4, "{u}");
    let inbound = u["calls"]["inbound"]["minutes"].as_f64().unwrap();
    assert!((2.0..2.1).contains(&inbound), "{u}");
    assert_eq!(u["calls"]["outbound"], json!({"count": 1, "minutes": 1.0}));
    assert_eq!(u["concurrent_streams_peak"], 2);
    assert_eq!(u["recorded_minutes"], 0.0);
    assert_eq!(u["storage_bytes"], 0);
    assert_eq!(
        u["quotas"]["concurrent_streams"],
        json!({"limit": null, "used": 0.0})
    );

    // A range before any of it: empty.
    let (status, old) = server
        .get("/v1/usage?from=2020-01-01&to=2020-02-01T00:00:00Z")
        .await;
    assert_eq!(status, 200, "{old}");
    assert_eq!(old["from"], "2020-01-01T00:00:00Z");
    assert_eq!(old["calls"]["inbound"], json!({"count": 0, "minutes": 0.0}));
    assert_eq!(old["concurrent_streams_peak"], 0);
    for bad in [
        "from=yesterday",
        "from=2026-02-01&to=2026-01-01",
        "since=2026-01-01",
    ] {
        let (status, body) = server.get(&format!("/v1/usage?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
