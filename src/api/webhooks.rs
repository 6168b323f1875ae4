//! Twilio webhooks: the voice URL (answer a call with TwiML) and the status
//! callback (call lifecycle, media stream and recording events).
//!
//! Every request is authenticated before it is read: the `AccountSid` it
//! claims names a tenant, whose auth token must verify `X-Twilio-Signature`
//! over the URL as Twilio called it (our public base URL + path and query)
//! and the body. Signatures carry no timestamp, so replays verify; they are
//! made harmless instead: status callbacks are claimed once by a key equal
//! for redeliveries ([`StatusEvent::dedup_key`]) and applied by the ordering
//! rule of [`crate::store::transition`]; a voice webhook for a call that has
//! ended is turned away.

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::phone_numbers::STATUS_PATH;
use super::AppState;
use crate::gateway::quota::{self, At, Quota};
use crate::providers::model::{
    Announcement, CallDirection, CallStatus as ProviderStatus, Party, Rejection, StatusEvent,
    StreamAnswer, StreamMode, WebhookError, WebhookRequest,
};
use crate::providers::twilio::{signature, token, SIGNATURE_HEADER};
use crate::store::{
    now_ms, CallEventOutcome, CallPolicy, CallStatus, Direction, ProviderCallEvent,
    TwilioCredentials,
};

/// Where Twilio connects the call's media stream.
const STREAM_PATH: &str = "/v1/providers/twilio/stream";
/// Twilio's delivery id header, the same on its retries.
const IDEMPOTENCY_HEADER: &str = "i-twilio-idempotency-token";

/// Said to a caller turned away by a quota.
const BUSY_MESSAGE: &str =
    "We are sorry, we cannot take your call right now. Please try again later. Goodbye.";

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

fn webhook_error(e: &WebhookError) -> Response {
    match e {
        // 403 rather than 401: no credential of ours (API key) would help.
        WebhookError::MissingSignature => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "X-Twilio-Signature is required",
        ),
        WebhookError::BadSignature => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "X-Twilio-Signature does not verify",
        ),
        WebhookError::TooLarge(_) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            e.to_string(),
        ),
        _ => error(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "{what}");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

/// The request as Twilio sent it, with the URL it signed.
fn webhook_request(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> WebhookRequest {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let base = state.config.public_url();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    WebhookRequest {
        url: format!("{}{path_and_query}", base.as_str().trim_end_matches('/')),
        content_type: header(header::CONTENT_TYPE.as_str()),
        body,
        signature: header(SIGNATURE_HEADER),
        idempotency_token: header(IDEMPOTENCY_HEADER),
    }
}

/// The tenant whose auth token signed `req`. An unknown account answers
/// like a bad signature, so accounts cannot be probed.
async fn authenticate(
    state: &AppState,
    kind: &'static str,
    req: &WebhookRequest,
) -> Result<TwilioCredentials, Response> {
    let refuse = |e: WebhookError| {
        state.metrics.webhook(kind, "rejected");
        tracing::warn!(error = %e, "{kind} webhook refused");
        webhook_error(&e)
    };
    if req.signature.is_none() {
        return Err(refuse(WebhookError::MissingSignature));
    }
    let account = state.provider.webhook_account_id(req).map_err(refuse)?;
    let creds = match state.store.twilio_credentials_for(&account).await {
        Ok(c) => c,
        Err(crate::store::StoreError::NotFound) => return Err(refuse(WebhookError::BadSignature)),
        Err(e) => return Err(internal("cannot look up the webhook's account", e)),
    };
    state
        .provider
        .verify_webhook(&creds.auth_token, req)
        .map_err(refuse)?;
    Ok(creds)
}

fn store_status(s: ProviderStatus) -> CallStatus {
    match s {
        ProviderStatus::Queued | ProviderStatus::Initiated => CallStatus::Queued,
        ProviderStatus::Ringing => CallStatus::Ringing,
        ProviderStatus::InProgress => CallStatus::InProgress,
        ProviderStatus::Completed => CallStatus::Completed,
        ProviderStatus::Busy => CallStatus::Busy,
        ProviderStatus::Failed => CallStatus::Failed,
        ProviderStatus::NoAnswer => CallStatus::NoAnswer,
        ProviderStatus::Canceled => CallStatus::Canceled,
    }
}

fn store_direction(d: CallDirection) -> Direction {
    if d.is_inbound() {
        Direction::Inbound
    } else {
        Direction::Outbound
    }
}

fn phone(p: Option<&Party>) -> Option<&str> {
    p.and_then(Party::phone).map(|n| n.as_str())
}

fn twiml(doc: crate::providers::AnswerDocument) -> Response {
    ([(header::CONTENT_TYPE, doc.content_type)], doc.body).into_response()
}

/// `POST /v1/providers/twilio/voice`: a call to (or placed from) one of the
/// tenant's numbers asks what to do. Answer: the consent announcement, if
/// set, then `<Connect><Stream>` to us with a per-call token; or a polite
/// rejection for numbers we do not route and tenants over quota.
pub async fn voice(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = webhook_request(&state, &uri, &headers, body);
    let creds = match authenticate(&state, "voice", &req).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let call = match state.provider.parse_inbound_call(&req) {
        Ok(c) => c,
        Err(e) => {
            state.metrics.webhook("voice", "rejected");
            return webhook_error(&e);
        }
    };
    if call.account_id != creds.account_sid {
        return webhook_error(&WebhookError::BadSignature);
    }
    let tenant = &creds.tenant_id;
    // Our side of the call: the number dialled, or the number we called from.
    let ours = if call.direction.is_inbound() {
        &call.to
    } else {
        &call.from
    };
    let routed = match ours.phone() {
        Some(n) => match state.store.find_active_number(tenant, n.as_str()).await {
            Ok(found) => found.is_some(),
            Err(e) => return internal("cannot route the call", e),
        },
        None => false,
    };
    if !routed {
        state.metrics.webhook("voice", "unknown_number");
        tracing::info!("voice webhook for a number not routed here: rejected");
        return twiml(
            state
                .provider
                .reject_document(&Rejection::Reject { busy: false }),
        );
    }

    let now = now_ms();
    let event = ProviderCallEvent {
        provider: state.provider.name(),
        external_call_id: &call.call_id,
        status: store_status(call.status),
        sequence: None,
        duration_ms: None,
        from_number: phone(Some(&call.from)),
        to_number: phone(Some(&call.to)),
        create_as: Some(store_direction(call.direction)),
    };
    let row = match state.store.apply_call_event(tenant, &event, now).await {
        Ok(CallEventOutcome::Created(c) | CallEventOutcome::Applied(c)) => c,
        Ok(CallEventOutcome::Ignored(c, _)) => c,
        Ok(CallEventOutcome::UnknownCall) => return internal("call not created", "unknown call"),
        Err(e) => return internal("cannot record the call", e),
    };
    // Twilio retries a voice webhook it got no answer to: answer again. A
    // call that has ended cannot be answered: a replay, turned away.
    let first = match state
        .store
        .claim_webhook(
            tenant,
            state.provider.name(),
            &format!("voice:{}", call.call_id),
            req.idempotency_token.as_deref(),
            "voice",
            now,
        )
        .await
    {
        Ok(first) => first,
        Err(e) => return internal("cannot record the webhook", e),
    };
    if row.status.is_terminal() {
        state.metrics.webhook("voice", "replayed");
        return twiml(
            state
                .provider
                .reject_document(&Rejection::Reject { busy: false }),
        );
    }
    let settings = match state.store.tenant_settings(tenant).await {
        Ok(s) => s,
        Err(e) => return internal("cannot read tenant settings", e),
    };
    // Answering starts the call: its policy is pinned here (a retried
    // webhook finds the first one), so the consent it announces and what
    // the stream then does agree.
    let policy = match state
        .store
        .pin_call_policy(tenant, &row.id, &CallPolicy::from_settings(&settings, now))
        .await
    {
        Ok(p) => p,
        Err(e) => return internal("cannot pin the call policy", e),
    };

    // Quotas: a stream slot must be free, and this month's minutes left.
    let mut over = None;
    if settings
        .quotas
        .max_concurrent_streams
        .is_some_and(|limit| state.sessions.tenant_streams(tenant) >= limit)
    {
        quota::rejected(&state.metrics, Quota::ConcurrentStreams, At::CallAnswer);
        over = Some(Quota::ConcurrentStreams);
    }
    if over.is_none() {
        over = match quota::exhausted_for_call(
            &state.store,
            &state.metrics,
            tenant,
            &settings,
            &policy,
            At::CallAnswer,
        )
        .await
        {
            Ok(q) => q,
            Err(e) => return internal("cannot check quotas", e),
        };
    }
    if let Some(q) = over {
        state.metrics.webhook("voice", "quota_exceeded");
        if first {
            let detail = serde_json::json!({"reason": q.message(), "quota": q.as_str()});
            if let Err(e) = state
                .store
                .append_call_log(tenant, &row.id, "call_rejected", &detail, now)
                .await
            {
                tracing::error!(error = %e, "call log write failed");
            }
        }
        return twiml(
            state
                .provider
                .reject_document(&Rejection::Explain(Announcement::text(BUSY_MESSAGE))),
        );
    }

    let answer = match answer_for(&state, tenant, &call.call_id, &event, &row.id, &policy) {
        Ok(a) => a,
        Err(e) => return internal("bad public URL", e),
    };
    let doc = match state.provider.answer_document(&answer) {
        Ok(d) => d,
        Err(e) => return internal("cannot build the answer", e),
    };
    if first {
        let detail = serde_json::json!({
            "announcement": answer.announcement.is_some(),
            "stream": "connect",
        });
        if let Err(e) = state
            .store
            .append_call_log(tenant, &row.id, "call_answered", &detail, now)
            .await
        {
            tracing::error!(error = %e, "call log write failed");
        }
    }
    state
        .metrics
        .webhook("voice", if first { "answered" } else { "duplicate" });
    twiml(doc)
}

/// `<Connect><Stream>` to our stream endpoint, carrying the call's token
/// (checked at stream start) and its parties.
fn answer_for(
    state: &AppState,
    tenant: &str,
    call_sid: &str,
    event: &ProviderCallEvent<'_>,
    call_id: &str,
    policy: &CallPolicy,
) -> Result<StreamAnswer, String> {
    let stream_url = signature::stream_url(state.config.public_url().as_str(), STREAM_PATH)
        .map_err(|e| e.to_string())
        .and_then(|u| url::Url::parse(&u).map_err(|e| e.to_string()))?;
    let status_callback = state
        .public_endpoint(STATUS_PATH)
        .map_err(|e| e.to_string())?;
    let expires =
        now_ms() / 1000 + i64::try_from(state.config.stream.token_ttl_secs).unwrap_or(i64::MAX / 2);
    let tok = token::issue(
        state.token_secret.expose().as_bytes(),
        tenant,
        call_sid,
        expires,
    );
    let direction = event.create_as.unwrap_or(Direction::Inbound);
    let mut parameters = vec![
        (token::TOKEN_PARAMETER.to_string(), tok),
        ("direction".to_string(), direction.as_str().to_string()),
    ];
    for (name, value) in [("from", event.from_number), ("to", event.to_number)] {
        if let Some(v) = value {
            parameters.push((name.to_string(), v.to_string()));
        }
    }
    Ok(StreamAnswer {
        announcement: policy
            .consent_announcement
            .as_ref()
            .map(|t| Announcement::text(t.clone())),
        stream_url,
        mode: StreamMode::Bidirectional,
        parameters,
        status_callback: Some(status_callback),
        stream_name: Some(call_id.to_string()),
    })
}

/// `POST /v1/providers/twilio/status`: call status, media stream and
/// recording callbacks. Answers 204 once acted on (or recognised as a
/// redelivery); 500 lets Twilio retry when we could not act.
pub async fn status(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = webhook_request(&state, &uri, &headers, body);
    let creds = match authenticate(&state, "status", &req).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let event = match state.provider.parse_status_callback(&req) {
        Ok(e) => e,
        Err(e) => {
            state.metrics.webhook("status", "rejected");
            return webhook_error(&e);
        }
    };
    if event.account_id() != creds.account_sid {
        return webhook_error(&WebhookError::BadSignature);
    }
    let kind = match &event {
        StatusEvent::Call(_) => "call",
        StatusEvent::Stream(_) => "stream",
        StatusEvent::Recording(_) => "recording",
    };
    let tenant = &creds.tenant_id;
    let provider = state.provider.name();
    let key = event.dedup_key();
    match state
        .store
        .claim_webhook(
            tenant,
            provider,
            &key,
            req.idempotency_token.as_deref(),
            kind,
            now_ms(),
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            state.metrics.webhook(kind, "duplicate");
            return StatusCode::NO_CONTENT.into_response();
        }
        Err(e) => return internal("cannot record the webhook", e),
    }
    match apply_status(&state, tenant, &event).await {
        Ok(outcome) => {
            state.metrics.webhook(kind, outcome);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            if let Err(e) = state
                .store
                .release_webhook_claim(tenant, provider, &key)
                .await
            {
                tracing::error!(error = %e, "webhook claim not released");
            }
            internal("cannot apply the status callback", e)
        }
    }
}

/// Acts on a claimed status callback; returns the metric outcome.
async fn apply_status(
    state: &AppState,
    tenant: &str,
    event: &StatusEvent,
) -> Result<&'static str, crate::store::StoreError> {
    let now = now_ms();
    let provider = state.provider.name();
    let (call_id, log_event, detail, outcome) = match event {
        StatusEvent::Call(e) => {
            let ev = ProviderCallEvent {
                provider,
                external_call_id: &e.call_id,
                status: store_status(e.status),
                sequence: e.sequence.and_then(|s| i64::try_from(s).ok()),
                duration_ms: e
                    .duration_secs
                    .and_then(|s| i64::try_from(s.saturating_mul(1000)).ok()),
                from_number: phone(e.from.as_ref()),
                to_number: phone(e.to.as_ref()),
                create_as: e.direction.map(store_direction),
            };
            let (call, applied, ignored) =
                match state.store.apply_call_event(tenant, &ev, now).await? {
                    CallEventOutcome::Created(c) | CallEventOutcome::Applied(c) => (c, true, None),
                    CallEventOutcome::Ignored(c, why) => (c, false, Some(why)),
                    CallEventOutcome::UnknownCall => return Ok("unknown_call"),
                };
            let detail = serde_json::json!({
                "status": e.status.as_str(),
                "sequence": e.sequence,
                "duration_secs": e.duration_secs,
                "sip_response_code": e.sip_response_code,
                "answered_by": e.answered_by,
                "applied": applied,
                "ignored_reason": ignored,
                "call_status": call.status,
            });
            let outcome = if applied { "applied" } else { "out_of_order" };
            (call.id, "provider_status", detail, outcome)
        }
        StatusEvent::Stream(e) => {
            let Some(call) = state
                .store
                .find_provider_call(tenant, provider, &e.call_id)
                .await?
            else {
                return Ok("unknown_call");
            };
            let log_event = match e.status {
                crate::providers::StreamStatus::Started => "provider_stream_started",
                crate::providers::StreamStatus::Stopped => "provider_stream_stopped",
                crate::providers::StreamStatus::Failed => "provider_stream_failed",
            };
            let detail = serde_json::json!({
                "stream_sid": e.stream_id,
                "stream_name": e.stream_name,
                "error": e.error,
            });
            (call.id, log_event, detail, "applied")
        }
        StatusEvent::Recording(e) => {
            let Some(call) = state
                .store
                .find_provider_call(tenant, provider, &e.call_id)
                .await?
            else {
                return Ok("unknown_call");
            };
            let detail = serde_json::json!({
                "recording_sid": e.recording_id,
                "status": e.status.as_str(),
                "url": e.url,
                "duration_secs": e.duration_secs,
                "channels": e.channels,
                "source": e.source,
                "error_code": e.error_code,
            });
            (call.id, "provider_recording", detail, "applied")
        }
    };
    state
        .store
        .append_call_log(tenant, &call_id, log_event, &detail, now)
        .await?;
    Ok(outcome)
}
