//! Calls API (outbound through the provider, filters, record edits, live
//! controls), customers, tickets and call → customer/ticket links, against a
//! real gateway on 127.0.0.1 talking to a fake Twilio REST API (MockTwilio)
//! that checks auth and answers with Twilio-shaped JSON.

mod common;

use callstream::store::{
    now_ms, CallRecordUpdate, Direction, NewCustomer, OutboundCallRow, Role, StreamCall,
    TranscriptStatus,
};
use common::mock_twilio::{self, MockTwilio};
use common::{http, TestServer, ACCOUNT_SID, AUTH_TOKEN};
use serde_json::{json, Value};

const OUR_NUMBER: &str = "+14155550100";
const CUSTOMER_NUMBER: &str = "+14155552671";

/// A gateway whose Twilio API is `mock`, reachable (for Twilio) at a public
/// HTTPS URL, with one phone number.
async fn server_with(mock: &MockTwilio) -> TestServer {
    let base = mock.base_url.clone();
    let server = TestServer::start_with(move |cfg| {
        cfg.providers.twilio.api_base_url = base;
        cfg.public_url = Some(url::Url::parse("https://gw.example.test").unwrap());
    })
    .await;
    add_phone_number(&server, &server.tenant_id, OUR_NUMBER).await;
    server
}

async fn add_phone_number(server: &TestServer, tenant: &str, number: &str) {
    sqlx::query(
        "INSERT INTO phone_numbers (id, tenant_id, number, provider, external_id, status, \
         created_at, updated_at) VALUES ($1, $2, $3, 'twilio', $4, 'active', $5, $5)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(tenant)
    .bind(number)
    .bind(format!("PN{:0>32}", number.trim_start_matches('+')))
    .bind(now_ms())
    .execute(server.store.pool())
    .await
    .unwrap();
}

async fn mock() -> MockTwilio {
    MockTwilio::start(Vec::new()).await
}

impl Req for TestServer {
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
    fn key(&self) -> &str {
        &self.api_key
    }
}

/// Requests with a key, JSON in and out.
trait Req {
    fn addr(&self) -> std::net::SocketAddr;
    fn key(&self) -> &str;
    async fn req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(self.addr(), method, path, Some(self.key()), body.as_ref()).await
    }
}

/// A raw request body (for invalid JSON).
async fn raw(server: &TestServer, method: &str, path: &str, body: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.api_key,
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    let (head, rest) = out.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(rest).unwrap_or(Value::Null))
}

fn assert_error(status: u16, body: &Value, want: u16, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn call_count(server: &TestServer) -> usize {
    let (s, page) = server.req("GET", "/v1/calls?limit=500", None).await;
    assert_eq!(s, 200);
    page["calls"].as_array().unwrap().len()
}

async fn create_customer(server: &TestServer, name: &str, numbers: &[&str]) -> Value {
    let (s, c) = server
        .req(
            "POST",
            "/v1/customers",
            Some(json!({ "name": name, "phone_numbers": numbers })),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    c
}

#[tokio::test]
async fn outbound_call_goes_through_twilio_and_is_matched_to_its_customer() {
    let twilio = mock().await;
    let server = server_with(&twilio).await;
    let customer = create_customer(&server, "Grace Hopper", &["+1 (415) 555-2671"]).await;
    assert_eq!(customer["phone_numbers"], json!([CUSTOMER_NUMBER]));

    let (status, call) = server
        .req(
            "POST",
            "/v1/calls",
            Some(json!({ "to": "+1 415-555-2671" })),
        )
        .await;
    assert_eq!(status, 201, "{call}");

    // What Twilio was asked: the tenant's credentials, our number, status
    // callbacks to our public URL, TwiML streaming the call to us.
    let sent = twilio.last();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.account_path(), "Calls.json");
    assert_eq!(
        sent.basic_auth,
        Some((ACCOUNT_SID.to_string(), AUTH_TOKEN.to_string()))
    );
    assert_eq!(sent.one("To"), CUSTOMER_NUMBER);
    assert_eq!(sent.one("From"), OUR_NUMBER);
    assert_eq!(
        sent.one("StatusCallback"),
        "https://gw.example.test/v1/providers/twilio/status"
    );
    assert_eq!(
        sent.all("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    let twiml = sent.one("Twiml");
    assert!(
        twiml.contains("<Connect><Stream url=\"wss://gw.example.test/v1/providers/twilio/stream\""),
        "{twiml}"
    );
    assert!(
        twiml.contains("<Parameter name=\"direction\" value=\"outbound\"/>"),
        "{twiml}"
    );

    // The row: outbound, queued, Twilio's CallSid, its customer, its agent.
    let sid = call["external_call_id"].as_str().unwrap();
    assert!(sid.starts_with("CA") && sid.len() == 34, "{call}");
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["status"], "queued");
    assert_eq!(call["from_number"], OUR_NUMBER);
    assert_eq!(call["to_number"], CUSTOMER_NUMBER);
    assert_eq!(call["customer_id"], customer["id"]);
    assert_eq!(call["customer"]["name"], "Grace Hopper");
    assert!(call["assigned_user_id"].is_string(), "{call}");
    assert_eq!(call["logs"][0]["event"], "outbound_created");

    let (s, detail) = server
        .req(
            "GET",
            &format!("/v1/calls/{}", call["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(detail["customer"]["id"], customer["id"]);
    assert!(detail["ticket"].is_null() && detail["recording"].is_null());
    assert_eq!(call_count(&server).await, 1);
}

#[tokio::test]
async fn bad_outbound_requests_are_refused_before_twilio_is_asked() {
    let twilio = mock().await;
    let server = server_with(&twilio).await;
    let cases: Vec<(&str, u16)> = vec![
        ("{\"to\": ", 400),                                    // invalid JSON
        ("{\"to\": 14155552671}", 422),                        // wrong type
        ("{\"to\": \"+14155552671\", \"record\": true}", 422), // unknown field
        ("{}", 422),                                           // missing field
        ("{\"to\": \"555-2671\"}", 400),                       // no country code
        ("{\"to\": \"+1415555267a\"}", 400),                   // not a number
        (
            "{\"to\": \"+14155552671\", \"from\": \"+14155550999\"}",
            400,
        ), // not ours
        ("{\"to\": \"+14155552671\", \"ring_timeout_secs\": 1}", 400),
    ];
    for (body, want) in cases {
        let (status, err) = raw(&server, "POST", "/v1/calls", body).await;
        assert_error(status, &err, want, "bad_request");
    }
    assert!(twilio.requests().is_empty(), "{:?}", twilio.requests());
    assert_eq!(call_count(&server).await, 0);
}

#[tokio::test]
async fn a_tenant_without_numbers_must_name_a_caller_id() {
    let twilio = mock().await;
    let base = twilio.base_url.clone();
    let server = TestServer::start_with(move |cfg| cfg.providers.twilio.api_base_url = base).await;
    let (s, err) = server
        .req("POST", "/v1/calls", Some(json!({ "to": CUSTOMER_NUMBER })))
        .await;
    assert_error(s, &err, 400, "bad_request");
    assert!(err["error"]["message"].as_str().unwrap().contains("from"));
    let (s, call) = server
        .req(
            "POST",
            "/v1/calls",
            Some(json!({ "to": CUSTOMER_NUMBER, "from": "0044 20 7946 0958" })),
        )
        .await;
    assert_eq!(s, 201, "{call}");
    assert_eq!(twilio.last().one("From"), "+442079460958");
    // No default status-callback host configured: ours, from the listen address.
    assert_eq!(
        twilio.last().one("StatusCallback"),
        format!("http://{}/v1/providers/twilio/status", server.addr)
    );
}

#[tokio::test]
async fn provider_refusals_and_timeouts_are_clear_errors_and_write_nothing() {
    let twilio = mock().await;
    let server = server_with(&twilio).await;
    // Twilio refuses the number (21211): the client's to fix.
    let (s, err) = server
        .req(
            "POST",
            "/v1/calls",
            Some(json!({ "to": mock_twilio::INVALID_TO })),
        )
        .await;
    assert_error(s, &err, 422, "provider_rejected");
    assert_eq!(err["error"]["provider_code"], 21211);
    assert_eq!(err["error"]["retryable"], false);
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not a valid phone number"));
    assert_eq!(call_count(&server).await, 0);

    // A Twilio that never answers.
    let (silent, _task) = mock_twilio::silent_server().await;
    let server = TestServer::start_with(move |cfg| {
        cfg.providers.twilio.api_base_url = silent;
        cfg.providers.twilio.request_timeout_ms = 300;
    })
    .await;
    add_phone_number(&server, &server.tenant_id, OUR_NUMBER).await;
    let (s, err) = server
        .req("POST", "/v1/calls", Some(json!({ "to": CUSTOMER_NUMBER })))
        .await;
    assert_error(s, &err, 504, "provider_timeout");
    assert_eq!(err["error"]["retryable"], true);
    assert_eq!(call_count(&server).await, 0);

    // A tenant with no Twilio account at all.
    let other = server.store.create_tenant("NoTwilio", None).await.unwrap();
    add_phone_number(&server, &other.id, "+14155550111").await;
    let key = server
        .store
        .create_user(&other.id, "ops", None, Role::Admin)
        .await
        .unwrap();
    let (s, err) = http(
        server.addr,
        "POST",
        "/v1/calls",
        Some(key.key.plaintext.expose()),
        Some(&json!({ "to": CUSTOMER_NUMBER })),
    )
    .await;
    assert_error(s, &err, 409, "conflict");
}

/// An outbound call placed through the API, its id and CallSid.
async fn place_call(server: &TestServer) -> (String, String) {
    let (s, call) = server
        .req("POST", "/v1/calls", Some(json!({ "to": CUSTOMER_NUMBER })))
        .await;
    assert_eq!(s, 201, "{call}");
    (
        call["id"].as_str().unwrap().to_string(),
        call["external_call_id"].as_str().unwrap().to_string(),
    )
}

fn events(call: &Value) -> Vec<String> {
    call["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn patch_edits_the_record_and_rejects_bad_references() {
    let twilio = mock().await;
    let server = server_with(&twilio).await;
    let (id, _) = place_call(&server).await;
    let path = format!("/v1/calls/{id}");
    let agent = server
        .store
        .create_user(&server.tenant_id, "Agent Ann", None, Role::Agent)
        .await
        .unwrap();
    let (_, ticket) = server
        .req("POST", "/v1/tickets", Some(json!({ "subject": "Billing" })))
        .await;

    let (s, call) = server
        .req(
            "PATCH",
            &path,
            Some(json!({
                "disposition": "resolved",
                "notes": "Customer asked for a callback.",
                "assigned_user_id": agent.user.id,
                "ticket_id": ticket["id"],
            })),
        )
        .await;
    assert_eq!(s, 200, "{call}");
    assert_eq!(call["disposition"], "resolved");
    assert_eq!(call["notes"], "Customer asked for a callback.");
    assert_eq!(call["assigned_user_id"], agent.user.id.as_str());
    assert_eq!(call["ticket"]["subject"], "Billing");
    assert!(events(&call).contains(&"record_updated".to_string()));
    // null clears; absent leaves alone.
    let (_, call) = server
        .req("PATCH", &path, Some(json!({ "notes": null })))
        .await;
    assert!(call["notes"].is_null());
    assert_eq!(call["disposition"], "resolved");

    // Another tenant's user and ticket are not references this call can take.
    let other = server.store.create_tenant("Other", None).await.unwrap();
    let stranger = server
        .store
        .create_user(&other.id, "Bob", None, Role::Agent)
        .await
        .unwrap();
    let (s, err) = server
        .req(
            "PATCH",
            &path,
            Some(json!({ "assigned_user_id": stranger.user.id })),
        )
        .await;
    assert_error(s, &err, 400, "bad_request");
    let foreign_ticket = http(
        server.addr,
        "POST",
        "/v1/tickets",
        Some(stranger.key.plaintext.expose()),
        Some(&json!({ "subject": "theirs" })),
    )
    .await
    .1;
    let (s, err) = server
        .req(
            "PATCH",
            &path,
            Some(json!({ "ticket_id": foreign_ticket["id"] })),
        )
        .await;
    assert_error(s, &err, 400, "bad_request");
    // Nor can the other tenant see or change this call.
    let (s, err) = http(
        server.addr,
        "PATCH",
        &path,
        Some(stranger.key.plaintext.expose()),
        Some(&json!({ "notes": "x" })),
    )
    .await;
    assert_error(s, &err, 404, "not_found");

    for (body, want) in [
        ("{\"disposition\": 5}", 422),
        ("{\"color\": \"red\"}", 422),
        ("{\"disposition\": \"\"}", 400),
        ("{\"control\": {\"action\": \"explode\"}}", 422),
        ("{\"control\": {\"action\": \"transfer\"}}", 422),
        (
            "{\"control\": {\"action\": \"transfer\", \"to\": \"12\"}}",
            400,
        ),
        ("not json", 400),
    ] {
        let (s, err) = raw(&server, "PATCH", &path, body).await;
        assert_error(s, &err, want, "bad_request");
    }
    let (_, call) = server.req("GET", &path, None).await;
    assert_eq!(call["disposition"], "resolved");
    assert_eq!(call["ticket_id"], ticket["id"]);
}

#[tokio::test]
async fn live_controls_go_through_twilio_and_are_logged() {
    let twilio = mock().await;
    let server = server_with(&twilio).await;
    let (id, sid) = place_call(&server).await;
    let path = format!("/v1/calls/{id}");

    // Not in a conference: hold and mute cannot work, and say why.
    let before = twilio.requests().len();
    let (s, err) = server
        .req(
            "PATCH",
            &path,
            Some(json!({ "control": { "action": "hold" } })),
        )
        .await;
    assert_error(s, &err, 409, "conflict");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("conference"));
    assert_eq!(twilio.requests().len(), before);

    let conference = "CF0123456789abcdef0123456789abcdef";
    server
        .store
        .update_call_record(
            &server.tenant_id,
            &id,
            &CallRecordUpdate {
                conference_sid: Some(Some(conference.into())),
                ..Default::default()
            },
            now_ms(),
        )
        .await
        .unwrap();
    for (action, field, value) in [
        ("hold", "Hold", "true"),
        ("unhold", "Hold", "false"),
        ("mute", "Muted", "true"),
        ("unmute", "Muted", "false"),
    ] {
        let (s, call) = server
            .req(
                "PATCH",
                &path,
                Some(json!({ "control": { "action": action } })),
            )
            .await;
        assert_eq!(s, 200, "{action}: {call}");
        let sent = twilio.last();
        assert_eq!(
            sent.account_path(),
            format!("Conferences/{conference}/Participants/{sid}.json")
        );
        assert_eq!(sent.one(field), value, "{action}");
        let last = call["logs"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["event"], "control");
        assert_eq!(last["detail"]["action"], action);
    }

    // Transfer: the call is redirected to dial the new party, our number as caller id.
    let (s, call) = server
        .req(
            "PATCH",
            &path,
            Some(json!({ "control": { "action": "transfer", "to": "+1 415 555 0199" } })),
        )
        .await;
    assert_eq!(s, 200, "{call}");
    let sent = twilio.last();
    assert_eq!(sent.account_path(), format!("Calls/{sid}.json"));
    let twiml = sent.one("Twiml");
    assert!(twiml.contains("<Number>+14155550199</Number>"), "{twiml}");
    assert!(
        twiml.contains(&format!("callerId=\"{OUR_NUMBER}\"")),
        "{twiml}"
    );

    // Hang up, with a record edit in the same request.
    let (s, call) = server
        .req(
            "PATCH",
            &path,
            Some(json!({ "control": { "action": "hang_up" }, "disposition": "no_sale" })),
        )
        .await;
    assert_eq!(s, 200, "{call}");
    assert_eq!(twilio.last().one("Status"), "completed");
    assert_eq!(call["status"], "completed");
    assert_eq!(call["disposition"], "no_sale");
    let controls = events(&call).iter().filter(|e| *e == "control").count();
    assert_eq!(controls, 6);

    // An ended call takes no more controls.
    let (s, err) = server
        .req(
            "PATCH",
            &path,
            Some(json!({ "control": { "action": "mute" } })),
        )
        .await;
    assert_error(s, &err, 409, "conflict");
}

#[tokio::test]
async fn a_failing_provider_leaves_the_call_as_it_was() {
    let twilio = mock().await;
    let server = server_with(&twilio).await;
    for (sid, status, code) in [
        (mock_twilio::FAILING_CALL, 502, "provider_error"),
        (mock_twilio::UNKNOWN_CALL, 422, "provider_rejected"),
        (mock_twilio::THROTTLED_CALL, 429, "provider_throttled"),
    ] {
        let call = server
            .store
            .create_outbound_call(
                &server.tenant_id,
                &OutboundCallRow {
                    provider: "twilio",
                    external_call_id: sid,
                    from_number: OUR_NUMBER,
                    to_number: CUSTOMER_NUMBER,
                    customer_id: None,
                    assigned_user_id: None,
                },
                now_ms(),
            )
            .await
            .unwrap();
        let path = format!("/v1/calls/{}", call.id);
        let (s, err) = server
            .req(
                "PATCH",
                &path,
                Some(json!({ "control": { "action": "hang_up" }, "notes": "gone" })),
            )
            .await;
        assert_error(s, &err, status, code);
        let (_, after) = server.req("GET", &path, None).await;
        assert_eq!(after["status"], "queued", "{sid}");
        assert!(after["notes"].is_null(), "{sid}");
        assert!(events(&after).is_empty(), "{sid}: {after}");
    }
}

#[tokio::test]
async fn calls_filter_by_status_direction_number_and_time_and_page() {
    let twilio = mock().await;
    let server = server_with(&twilio).await;
    let t = &server.tenant_id;
    let store = &server.store;
    // Three inbound calls from two numbers, then two outbound through the API.
    for (i, from) in ["+442079460958", CUSTOMER_NUMBER, "+442079460958"]
        .iter()
        .enumerate()
    {
        // Not the mock's CallSids (CA…01, CA…02 for the outbound calls).
        let sid = format!("CA{:032}", i + 101);
        let stream = format!("MZ{:032}", i + 101);
        store
            .start_stream_call(
                t,
                &StreamCall {
                    provider: "twilio",
                    external_call_id: &sid,
                    stream_id: &stream,
                    direction: Direction::Inbound,
                    from_number: Some(from),
                    to_number: Some(OUR_NUMBER),
                },
                now_ms(),
            )
            .await
            .unwrap();
    }
    let midpoint = now_ms() + 1;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (first_out, _) = place_call(&server).await;
    place_call(&server).await;
    let (s, _) = server
        .req(
            "PATCH",
            &format!("/v1/calls/{first_out}"),
            Some(json!({ "control": { "action": "hang_up" } })),
        )
        .await;
    assert_eq!(s, 200);

    let count = |q: String| {
        let server = &server;
        async move {
            let (s, page) = server.req("GET", &format!("/v1/calls?{q}"), None).await;
            assert_eq!(s, 200, "{q}: {page}");
            page["calls"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("direction=inbound".into()).await, 3);
    assert_eq!(count("direction=outbound".into()).await, 2);
    assert_eq!(count("status=completed".into()).await, 1);
    assert_eq!(count("status=in_progress".into()).await, 3);
    assert_eq!(count("status=queued&direction=outbound".into()).await, 1);
    // The number in any spelling; it matches the caller or the callee.
    assert_eq!(count("number=%2B44%2020%207946%200958".into()).await, 2);
    assert_eq!(count("number=0044-20-7946-0958".into()).await, 2);
    assert_eq!(
        count(format!("number=%2B{}", &CUSTOMER_NUMBER[1..])).await,
        3
    );
    assert_eq!(count(format!("from={midpoint}")).await, 2);
    assert_eq!(count(format!("to={midpoint}")).await, 3);
    assert_eq!(
        count("from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z".into()).await,
        0
    );

    // Cursor paging walks every call once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/calls?limit=2&direction=inbound&cursor={c}"),
            None => "/v1/calls?limit=2&direction=inbound".into(),
        };
        let (_, page) = server.req("GET", &q, None).await;
        for c in page["calls"].as_array().unwrap() {
            seen.push(c["external_call_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [103, 102, 101].map(|i| format!("CA{i:032}")),
        "newest first, each once"
    );

    for q in [
        "status=dancing",
        "direction=sideways",
        "number=hello",
        "from=yesterday",
        "limit=0",
        "colour=red",
    ] {
        let (s, err) = server.req("GET", &format!("/v1/calls?{q}"), None).await;
        assert_eq!(s, 400, "{q}: {err}");
        assert_eq!(err["error"]["code"], "bad_request", "{q}");
    }
}

#[tokio::test]
async fn customers_crud_normalises_numbers_and_is_tenant_scoped() {
    let server = TestServer::start().await;
    let c = create_customer(&server, "Ada", &["+44 20 7946 0958", "00442079460958"]).await;
    assert_eq!(c["phone_numbers"], json!(["+442079460958"]), "deduplicated");
    let id = c["id"].as_str().unwrap();

    // A number names one customer per tenant.
    let (s, err) = server
        .req(
            "POST",
            "/v1/customers",
            Some(json!({ "name": "Eve", "phone_numbers": ["+442079460958"] })),
        )
        .await;
    assert_error(s, &err, 409, "conflict");
    for (body, want) in [
        (
            json!({ "name": "Eve", "phone_numbers": ["020 7946 0958"] }),
            400,
        ),
        (json!({ "name": "" }), 400),
        (json!({ "name": "Eve", "email": "not-an-address" }), 400),
        (
            json!({ "name": "Eve", "phone_numbers": "+442079460958" }),
            422,
        ),
        (json!({ "name": "Eve", "vip": true }), 422),
        (json!({ "phone_numbers": [] }), 422),
    ] {
        let (s, err) = server
            .req("POST", "/v1/customers", Some(body.clone()))
            .await;
        assert_error(s, &err, want, "bad_request");
    }

    let (s, page) = server
        .req("GET", "/v1/customers?number=%2B44%2020%207946%200958", None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["customers"].as_array().unwrap().len(), 1);
    let (_, page) = server.req("GET", "/v1/customers", None).await;
    assert_eq!(page["customers"].as_array().unwrap().len(), 1);

    let path = format!("/v1/customers/{id}");
    let (s, c) = server
        .req(
            "PATCH",
            &path,
            Some(json!({ "email": "Ada@Example.com", "phone_numbers": ["+1 415 555 2671"] })),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["email"], "ada@example.com");
    assert_eq!(c["phone_numbers"], json!([CUSTOMER_NUMBER]));
    assert_eq!(c["name"], "Ada");
    let (_, c) = server
        .req("PATCH", &path, Some(json!({ "email": null })))
        .await;
    assert!(c["email"].is_null());
    // The old number is free again.
    create_customer(&server, "Eve", &["+442079460958"]).await;

    // Another tenant sees none of it.
    let other = server.store.create_tenant("Other", None).await.unwrap();
    let key = server
        .store
        .create_user(&other.id, "x", None, Role::Admin)
        .await
        .unwrap();
    let key = key.key.plaintext.expose();
    for method in ["GET", "PATCH", "DELETE"] {
        let body = (method == "PATCH").then(|| json!({ "name": "Mallory" }));
        let (s, err) = http(server.addr, method, &path, Some(key), body.as_ref()).await;
        assert_error(s, &err, 404, "not_found");
    }
    let (_, page) = http(server.addr, "GET", "/v1/customers", Some(key), None).await;
    assert_eq!(page["customers"], json!([]));
    // The same number may belong to a customer of another tenant.
    let (s, _) = http(
        server.addr,
        "POST",
        "/v1/customers",
        Some(key),
        Some(&json!({ "name": "Other Ada", "phone_numbers": [CUSTOMER_NUMBER] })),
    )
    .await;
    assert_eq!(s, 201);

    let (s, _) = server.req("DELETE", &path, None).await;
    assert_eq!(s, 204);
    let (s, _) = server.req("GET", &path, None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn tickets_crud_validates_references_and_status() {
    let server = TestServer::start().await;
    let customer = create_customer(&server, "Ada", &[CUSTOMER_NUMBER]).await;
    let (s, t) = server
        .req(
            "POST",
            "/v1/tickets",
            Some(json!({ "subject": " Refund ", "customer_id": customer["id"], "description": "Charged twice" })),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["subject"], "Refund");
    assert_eq!(t["status"], "open");
    let path = format!("/v1/tickets/{}", t["id"].as_str().unwrap());

    for (body, want) in [
        (json!({ "subject": "x", "status": "solved" }), 422),
        (json!({ "subject": "x", "customer_id": "nope" }), 400),
        (json!({ "subject": "x", "call_id": "nope" }), 400),
        (json!({ "subject": 7 }), 422),
        (json!({ "subject": "x", "priority": "high" }), 422),
    ] {
        let (s, err) = server.req("POST", "/v1/tickets", Some(body.clone())).await;
        assert_error(s, &err, want, "bad_request");
    }

    let (s, t) = server
        .req(
            "PATCH",
            &path,
            Some(json!({ "status": "pending", "description": null })),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["status"], "pending");
    assert!(t["description"].is_null());
    assert_eq!(t["customer_id"], customer["id"]);
    let (s, err) = server
        .req("PATCH", &path, Some(json!({ "status": "reopened" })))
        .await;
    assert_error(s, &err, 422, "bad_request");
    server
        .req(
            "POST",
            "/v1/tickets",
            Some(json!({ "subject": "Other", "status": "closed" })),
        )
        .await;
    let (_, page) = server.req("GET", "/v1/tickets?status=pending", None).await;
    assert_eq!(page["tickets"].as_array().unwrap().len(), 1);
    let (_, page) = server
        .req(
            "GET",
            &format!(
                "/v1/tickets?customer_id={}",
                customer["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(page["tickets"].as_array().unwrap().len(), 1);
    let (_, page) = server.req("GET", "/v1/tickets?limit=1", None).await;
    assert_eq!(page["tickets"][0]["subject"], "Other", "newest first");
    assert!(page["next_cursor"].is_string());

    // Deleting the customer keeps the ticket, unlinked.
    let (s, _) = server
        .req(
            "DELETE",
            &format!("/v1/customers/{}", customer["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (_, t) = server.req("GET", &path, None).await;
    assert!(t["customer_id"].is_null(), "{t}");
    let (s, _) = server.req("DELETE", &path, None).await;
    assert_eq!(s, 204);
    let (s, err) = server.req("DELETE", &path, None).await;
    assert_error(s, &err, 404, "not_found");
}

#[tokio::test]
async fn an_inbound_call_matches_its_customer_and_becomes_a_ticket() {
    let server = TestServer::start().await;
    let t = &server.tenant_id;
    let customer = create_customer(&server, "Grace Hopper", &["+1 415 555 2671"]).await;
    let call = server
        .store
        .start_stream_call(
            t,
            &StreamCall {
                provider: "twilio",
                external_call_id: "CA0123456789abcdef0123456789abcdef",
                stream_id: "MZ0123456789abcdef0123456789abcdef",
                direction: Direction::Inbound,
                from_number: Some(CUSTOMER_NUMBER),
                to_number: Some(OUR_NUMBER),
            },
            now_ms(),
        )
        .await
        .unwrap();
    // What the webhook code calls when it creates or updates a call row.
    let matched = server.store.match_call_customer(t, &call.id).await.unwrap();
    assert_eq!(matched.as_deref(), customer["id"].as_str());

    // The call's transcript, finished with a summary.
    let summary = json!({
        "reason": "My card was charged twice.",
        "key_sentences": [{ "track": "caller", "start_ms": 1200, "text": "My card was charged twice." }],
        "action_items": [{ "track": "agent", "text": "I will refund the second charge today." }],
        "keywords": ["refund", "card"],
        "caller_words": 6,
        "agent_words": 8,
        "duration_ms": 9000
    });
    let transcript = server
        .store
        .create_call_transcript(t, &call.id, TranscriptStatus::Live, "tiny.en", now_ms())
        .await
        .unwrap();
    server
        .store
        .finish_transcript(
            t,
            &transcript,
            TranscriptStatus::Completed,
            Some(&summary),
            now_ms(),
        )
        .await
        .unwrap();

    let path = format!("/v1/calls/{}", call.id);
    let (_, detail) = server.req("GET", &path, None).await;
    assert_eq!(detail["customer"]["name"], "Grace Hopper");
    assert_eq!(detail["transcript_url"], format!("{path}/transcript"));

    let (s, err) = raw(&server, "POST", &format!("{path}/ticket"), "{\"subject\": ").await;
    assert_error(s, &err, 400, "bad_request");
    let (s, ticket) = raw(&server, "POST", &format!("{path}/ticket"), "").await;
    assert_eq!(s, 201, "{ticket}");
    assert_eq!(ticket["subject"], "Inbound call from Grace Hopper");
    assert_eq!(ticket["status"], "open");
    assert_eq!(ticket["call_id"], call.id.as_str());
    assert_eq!(ticket["customer_id"], customer["id"]);
    assert_eq!(ticket["transcript_url"], format!("{path}/transcript"));
    let description = ticket["description"].as_str().unwrap();
    assert!(description.contains("charged twice"), "{description}");
    assert!(
        description.contains("refund the second charge"),
        "{description}"
    );

    let (_, detail) = server.req("GET", &path, None).await;
    assert_eq!(detail["ticket_id"], ticket["id"]);
    assert_eq!(
        detail["ticket"]["subject"],
        "Inbound call from Grace Hopper"
    );
    assert!(events(&detail).contains(&"ticket_created".to_string()));
    // One ticket per call.
    let (s, err) = server
        .req(
            "POST",
            &format!("{path}/ticket"),
            Some(json!({ "subject": "again" })),
        )
        .await;
    assert_error(s, &err, 409, "conflict");
    let (_, page) = server.req("GET", "/v1/tickets", None).await;
    assert_eq!(page["tickets"].as_array().unwrap().len(), 1);
    // Another tenant cannot see the call to make a ticket of it.
    let other = server.store.create_tenant("Other", None).await.unwrap();
    let key = server
        .store
        .create_user(&other.id, "x", None, Role::Admin)
        .await
        .unwrap();
    let (s, _) = http(
        server.addr,
        "POST",
        &format!("{path}/ticket"),
        Some(key.key.plaintext.expose()),
        Some(&json!({})),
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_call_streaming_in_is_linked_to_its_customer() {
    use futures::SinkExt;
    let server = TestServer::start().await;
    let customer = create_customer(&server, "Grace Hopper", &[CUSTOMER_NUMBER]).await;
    // A stranger's call first: it stays unlinked.
    let mut streams = Vec::new();
    for from in ["+442079460958", CUSTOMER_NUMBER] {
        let mut ws = server.connect_signed().await;
        let mut call = common::Call::new();
        ws.send(call.start(&[("from", from), ("to", OUR_NUMBER)]))
            .await
            .unwrap();
        streams.push(ws);
        let n = streams.len();
        // The session opens once its start (customer match included) is done.
        common::eventually(|| async { server.state.sessions.open_calls().len() == n }).await;
    }
    for (from, want) in [
        (CUSTOMER_NUMBER, customer["id"].clone()),
        ("+442079460958", Value::Null),
    ] {
        let (_, page) = server
            .req("GET", &format!("/v1/calls?number=%2B{}", &from[1..]), None)
            .await;
        let calls = page["calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{page}");
        assert_eq!(calls[0]["customer_id"], want, "{page}");
    }
}

/// Keeps `NewCustomer` in the public API the webhook code uses.
#[allow(dead_code)]
fn _types(_: NewCustomer) {}
