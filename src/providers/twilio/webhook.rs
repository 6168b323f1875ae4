//! Twilio webhooks: signature check (wrapping [`signature`](super::signature))
//! and normalisation of Twilio's form fields into provider-neutral events.
//!
//! Voice webhooks and status callbacks are `application/x-www-form-urlencoded`
//! with PascalCase fields (`CallSid`, `CallStatus`, `SequenceNumber`, …).
//! One status URL may receive call, recording and stream callbacks; the kind
//! is told by the fields present (`StreamEvent`, then `RecordingStatus`, then
//! `CallStatus`). A field given twice is refused rather than guessed.

use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::OffsetDateTime;

use super::signature;
use crate::providers::model::{
    CallDirection, CallStatus, CallStatusEvent, InboundCall, Party, RecordingEvent,
    RecordingStatus, StatusEvent, StreamStatus, StreamStatusEvent, WebhookError, WebhookRequest,
};
use crate::secret::Secret;

/// Largest webhook body read (Twilio's are a few hundred bytes to ~2 KiB).
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// The form fields of a webhook, in body order.
#[derive(Debug)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes a form body. JSON bodies have no form fields.
    pub fn from_request(req: &WebhookRequest) -> Result<Self, WebhookError> {
        if req.body.len() > MAX_WEBHOOK_BYTES {
            return Err(WebhookError::TooLarge(MAX_WEBHOOK_BYTES));
        }
        if is_json(req) {
            return Ok(Self(Vec::new()));
        }
        if std::str::from_utf8(&req.body).is_err() {
            return Err(WebhookError::Malformed("body is not UTF-8"));
        }
        Ok(Self(
            url::form_urlencoded::parse(&req.body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    pub fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }

    /// A field's value; empty counts as absent; repeated is an error.
    fn get(&self, field: &'static str) -> Result<Option<&str>, WebhookError> {
        let mut found = None;
        for (k, v) in &self.0 {
            if k == field {
                if found.is_some() {
                    return Err(WebhookError::InvalidField { field });
                }
                found = Some(v.as_str());
            }
        }
        Ok(found.filter(|v| !v.is_empty()))
    }

    fn require(&self, field: &'static str) -> Result<&str, WebhookError> {
        self.get(field)?.ok_or(WebhookError::MissingField(field))
    }

    fn sid(&self, field: &'static str, prefix: &str) -> Result<String, WebhookError> {
        let v = self.require(field)?;
        if is_sid(v, prefix) {
            Ok(v.to_string())
        } else {
            Err(WebhookError::InvalidField { field })
        }
    }

    fn opt_string(&self, field: &'static str) -> Result<Option<String>, WebhookError> {
        Ok(self.get(field)?.map(str::to_string))
    }

    fn number<T: std::str::FromStr>(&self, field: &'static str) -> Result<Option<T>, WebhookError> {
        self.get(field)?
            .map(|v| v.parse().map_err(|_| WebhookError::InvalidField { field }))
            .transpose()
    }

    fn party(&self, field: &'static str) -> Result<Option<Party>, WebhookError> {
        Ok(self.get(field)?.map(party))
    }

    fn timestamp_ms(&self, field: &'static str) -> Result<Option<i64>, WebhookError> {
        Ok(self.get(field)?.and_then(parse_timestamp_ms))
    }
}

fn is_json(req: &WebhookRequest) -> bool {
    req.content_type
        .as_deref()
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// Twilio shows a caller who withheld their number as `+266696687`
/// ("ANONYMOUS" on a keypad), which would otherwise pass as a number in
/// Lesotho and match every anonymous caller to one customer.
pub const ANONYMOUS_NUMBER: &str = "+266696687";

/// A `From`/`To` value: a phone number, or `anonymous`, `client:…`, `sip:…`.
pub(crate) fn party(raw: &str) -> Party {
    if raw == ANONYMOUS_NUMBER || raw.eq_ignore_ascii_case("anonymous") {
        return Party::Other("anonymous".to_string());
    }
    Party::from_provider(raw)
}

/// `PREFIX` then 32 hex digits: the shape of every Twilio SID.
pub(crate) fn is_sid(v: &str, prefix: &str) -> bool {
    v.len() == 34 && v.starts_with(prefix) && v.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit)
}

/// Twilio writes `Timestamp` in RFC 2822 (`Tue, 31 Aug 2010 20:36:44 +0000`);
/// some callbacks use RFC 3339. Anything else is dropped, not fatal: a
/// status must not be lost over a clock string.
fn parse_timestamp_ms(raw: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(raw, &Rfc2822)
        .or_else(|_| OffsetDateTime::parse(raw, &Rfc3339))
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The `AccountSid` a webhook claims, to find the tenant (not yet trusted).
pub fn account_id(req: &WebhookRequest) -> Result<String, WebhookError> {
    if is_json(req) {
        if req.body.len() > MAX_WEBHOOK_BYTES {
            return Err(WebhookError::TooLarge(MAX_WEBHOOK_BYTES));
        }
        let v: serde_json::Value = serde_json::from_slice(&req.body)
            .map_err(|_| WebhookError::Malformed("body is not JSON"))?;
        let sid = ["AccountSid", "accountSid", "account_sid"]
            .iter()
            .find_map(|k| v.get(k).and_then(|s| s.as_str()))
            .ok_or(WebhookError::MissingField("AccountSid"))?;
        return if is_sid(sid, "AC") {
            Ok(sid.to_string())
        } else {
            Err(WebhookError::InvalidField {
                field: "AccountSid",
            })
        };
    }
    Params::from_request(req)?.sid("AccountSid", "AC")
}

/// Checks `X-Twilio-Signature` over the URL and form fields, or for JSON
/// bodies over the URL carrying `bodySHA256` (see [`signature`]).
pub fn verify(auth_token: &Secret, req: &WebhookRequest) -> Result<(), WebhookError> {
    let sig = req
        .signature
        .as_deref()
        .ok_or(WebhookError::MissingSignature)?;
    let ok = if is_json(req) {
        if req.body.len() > MAX_WEBHOOK_BYTES {
            return Err(WebhookError::TooLarge(MAX_WEBHOOK_BYTES));
        }
        signature::validate_json_body(auth_token.expose(), &req.url, &req.body, sig)
    } else {
        let params = Params::from_request(req)?;
        signature::validate(auth_token.expose(), &req.url, params.as_slice(), sig)
    };
    if ok {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

fn form_params(req: &WebhookRequest) -> Result<Params, WebhookError> {
    if is_json(req) {
        return Err(WebhookError::Malformed("expected a form-encoded body"));
    }
    Params::from_request(req)
}

fn call_status(p: &Params) -> Result<CallStatus, WebhookError> {
    let field = "CallStatus";
    Ok(match p.require(field)? {
        "queued" => CallStatus::Queued,
        "initiated" => CallStatus::Initiated,
        "ringing" => CallStatus::Ringing,
        "in-progress" => CallStatus::InProgress,
        "completed" => CallStatus::Completed,
        "busy" => CallStatus::Busy,
        "failed" => CallStatus::Failed,
        "no-answer" => CallStatus::NoAnswer,
        "canceled" => CallStatus::Canceled,
        _ => return Err(WebhookError::InvalidField { field }),
    })
}

/// Twilio's call direction; unknown values are left out rather than fatal.
pub(crate) fn direction(raw: &str) -> Option<CallDirection> {
    match raw {
        "inbound" => Some(CallDirection::Inbound),
        "outbound-api" => Some(CallDirection::OutboundApi),
        "outbound-dial" => Some(CallDirection::OutboundDial),
        _ => None,
    }
}

/// A voice webhook: a call to one of the tenant's numbers.
pub fn parse_inbound_call(req: &WebhookRequest) -> Result<InboundCall, WebhookError> {
    let p = form_params(req)?;
    let dir_raw = p.require("Direction")?;
    Ok(InboundCall {
        account_id: p.sid("AccountSid", "AC")?,
        call_id: p.sid("CallSid", "CA")?,
        from: p.party("From")?.ok_or(WebhookError::MissingField("From"))?,
        to: p.party("To")?.ok_or(WebhookError::MissingField("To"))?,
        status: call_status(&p)?,
        direction: direction(dir_raw).ok_or(WebhookError::InvalidField { field: "Direction" })?,
        caller_name: p.opt_string("CallerName")?,
        forwarded_from: p.party("ForwardedFrom")?,
        parent_call_id: p.opt_string("ParentCallSid")?,
    })
}

/// A status callback: stream, recording or call, told apart by its fields.
pub fn parse_status_callback(req: &WebhookRequest) -> Result<StatusEvent, WebhookError> {
    let p = form_params(req)?;
    let account_id = p.sid("AccountSid", "AC")?;
    let idempotency_token = req.idempotency_token.clone();
    if let Some(event) = p.get("StreamEvent")? {
        let status = match event {
            "stream-started" => StreamStatus::Started,
            "stream-stopped" => StreamStatus::Stopped,
            "stream-error" => StreamStatus::Failed,
            _ => {
                return Err(WebhookError::InvalidField {
                    field: "StreamEvent",
                })
            }
        };
        return Ok(StatusEvent::Stream(StreamStatusEvent {
            account_id,
            call_id: p.sid("CallSid", "CA")?,
            stream_id: p.sid("StreamSid", "MZ")?,
            stream_name: p.opt_string("StreamName")?,
            status,
            error: p.opt_string("StreamError")?,
            timestamp_ms: p.timestamp_ms("Timestamp")?,
            idempotency_token,
        }));
    }
    if let Some(raw) = p.get("RecordingStatus")? {
        let status = match raw {
            "in-progress" => RecordingStatus::InProgress,
            "paused" => RecordingStatus::Paused,
            "stopped" => RecordingStatus::Stopped,
            "processing" => RecordingStatus::Processing,
            "completed" => RecordingStatus::Completed,
            "absent" => RecordingStatus::Absent,
            "failed" => RecordingStatus::Failed,
            _ => {
                return Err(WebhookError::InvalidField {
                    field: "RecordingStatus",
                })
            }
        };
        return Ok(StatusEvent::Recording(RecordingEvent {
            account_id,
            call_id: p.sid("CallSid", "CA")?,
            recording_id: p.sid("RecordingSid", "RE")?,
            url: p.opt_string("RecordingUrl")?,
            status,
            duration_secs: p.number("RecordingDuration")?,
            channels: p.number("RecordingChannels")?,
            started_at_ms: p.timestamp_ms("RecordingStartTime")?,
            source: p.opt_string("RecordingSource")?,
            error_code: p.number::<u32>("ErrorCode")?.filter(|c| *c != 0),
            idempotency_token,
        }));
    }
    let status = call_status(&p)?;
    // `CallDuration` is the call's length; `Duration` (minutes, billing) is
    // only a fallback when the former is missing.
    let duration_secs = match p.number::<u64>("CallDuration")? {
        Some(d) => Some(d),
        None => p.number::<u64>("Duration")?.map(|m| m * 60),
    };
    Ok(StatusEvent::Call(CallStatusEvent {
        account_id,
        call_id: p.sid("CallSid", "CA")?,
        status,
        direction: p.get("Direction")?.and_then(direction),
        from: p.party("From")?,
        to: p.party("To")?,
        sequence: p.number("SequenceNumber")?,
        timestamp_ms: p.timestamp_ms("Timestamp")?,
        duration_secs,
        sip_response_code: p.number("SipResponseCode")?,
        answered_by: p.opt_string("AnsweredBy")?,
        parent_call_id: p.opt_string("ParentCallSid")?,
        idempotency_token,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const ACCOUNT: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const CALL: &str = "CAbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const URL: &str = "https://gw.example.com/v1/providers/twilio/status";

    fn form(pairs: &[(&str, &str)]) -> WebhookRequest {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        WebhookRequest {
            url: URL.into(),
            content_type: Some("application/x-www-form-urlencoded".into()),
            body: Bytes::from(body),
            signature: None,
            idempotency_token: Some("idem-1".into()),
        }
    }

    /// The fields Twilio posts to a number's voice URL for an inbound call.
    fn voice_fields() -> Vec<(&'static str, &'static str)> {
        vec![
            ("AccountSid", ACCOUNT),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", CALL),
            ("CallStatus", "ringing"),
            (
                "CallToken",
                "%7B%22parentCallInfoToken%22%3A%22eyJ...%22%7D",
            ),
            ("Called", "+14155550100"),
            ("CalledCity", "SAN FRANCISCO"),
            ("CalledCountry", "US"),
            ("CalledState", "CA"),
            ("CalledZip", "94105"),
            ("Caller", "+14155552671"),
            ("CallerCity", "OAKLAND"),
            ("CallerCountry", "US"),
            ("CallerName", ""),
            ("CallerState", "CA"),
            ("CallerZip", "94612"),
            ("Direction", "inbound"),
            ("From", "+14155552671"),
            ("FromCity", "OAKLAND"),
            ("FromCountry", "US"),
            ("FromState", "CA"),
            ("FromZip", "94612"),
            ("StirVerstat", "TN-Validation-Passed-A"),
            ("To", "+14155550100"),
            ("ToCity", "SAN FRANCISCO"),
            ("ToCountry", "US"),
            ("ToState", "CA"),
            ("ToZip", "94105"),
        ]
    }

    #[test]
    fn inbound_call_from_real_field_set() {
        let call = parse_inbound_call(&form(&voice_fields())).unwrap();
        assert_eq!(call.account_id, ACCOUNT);
        assert_eq!(call.call_id, CALL);
        assert_eq!(call.from.phone().unwrap().as_str(), "+14155552671");
        assert_eq!(call.to.phone().unwrap().as_str(), "+14155550100");
        assert_eq!(call.status, CallStatus::Ringing);
        assert_eq!(call.direction, CallDirection::Inbound);
        assert_eq!(call.caller_name, None, "empty CallerName is absent");
        assert_eq!(call.forwarded_from, None);
    }

    #[test]
    fn inbound_call_from_a_browser_client_and_anonymous() {
        let mut f = voice_fields();
        f.retain(|(k, _)| *k != "From");
        f.push(("From", "client:agent_alice"));
        let call = parse_inbound_call(&form(&f)).unwrap();
        assert_eq!(call.from, Party::Other("client:agent_alice".into()));
        assert_eq!(call.from.phone(), None);
        for withheld in [ANONYMOUS_NUMBER, "Anonymous"] {
            let mut f = voice_fields();
            f.retain(|(k, _)| *k != "From");
            f.push(("From", withheld));
            let call = parse_inbound_call(&form(&f)).unwrap();
            assert_eq!(call.from, Party::Other("anonymous".into()), "{withheld}");
        }
    }

    #[test]
    fn inbound_call_missing_or_bad_fields() {
        let mut f = voice_fields();
        f.retain(|(k, _)| *k != "CallSid");
        assert_eq!(
            parse_inbound_call(&form(&f)),
            Err(WebhookError::MissingField("CallSid"))
        );
        let mut f = voice_fields();
        f.push(("CallSid", "CAcccccccccccccccccccccccccccccccc"));
        assert_eq!(
            parse_inbound_call(&form(&f)),
            Err(WebhookError::InvalidField { field: "CallSid" }),
            "a repeated field is ambiguous"
        );
        let mut f = voice_fields();
        f.retain(|(k, _)| *k != "AccountSid");
        f.push(("AccountSid", "AC../../etc/passwd"));
        assert_eq!(
            parse_inbound_call(&form(&f)),
            Err(WebhookError::InvalidField {
                field: "AccountSid"
            })
        );
        let mut f = voice_fields();
        f.retain(|(k, _)| *k != "CallStatus");
        f.push(("CallStatus", "exploded"));
        assert_eq!(
            parse_inbound_call(&form(&f)),
            Err(WebhookError::InvalidField {
                field: "CallStatus"
            })
        );
        let mut req = form(&voice_fields());
        req.body = Bytes::from(vec![b'a'; MAX_WEBHOOK_BYTES + 1]);
        assert_eq!(
            parse_inbound_call(&req),
            Err(WebhookError::TooLarge(MAX_WEBHOOK_BYTES))
        );
        let mut req = form(&voice_fields());
        req.body = Bytes::from_static(b"AccountSid=\xff\xfe");
        assert!(matches!(
            parse_inbound_call(&req),
            Err(WebhookError::Malformed(_))
        ));
    }

    /// A `completed` call progress callback as Twilio sends it for an
    /// outbound API call with `StatusCallbackEvent`s.
    #[test]
    fn call_status_callback_completed() {
        let req = form(&[
            ("AccountSid", ACCOUNT),
            ("ApiVersion", "2010-04-01"),
            ("CallDuration", "47"),
            ("CallSid", CALL),
            ("CallStatus", "completed"),
            ("CallbackSource", "call-progress-events"),
            ("Called", "+14155552671"),
            ("Caller", "+14155550100"),
            ("Direction", "outbound-api"),
            ("Duration", "1"),
            ("From", "+14155550100"),
            ("SequenceNumber", "3"),
            ("SipResponseCode", "200"),
            ("Timestamp", "Tue, 31 Aug 2010 20:36:44 +0000"),
            ("To", "+14155552671"),
        ]);
        let StatusEvent::Call(e) = parse_status_callback(&req).unwrap() else {
            panic!("not a call event");
        };
        assert_eq!(e.status, CallStatus::Completed);
        assert_eq!(e.direction, Some(CallDirection::OutboundApi));
        assert_eq!(e.sequence, Some(3));
        assert_eq!(e.duration_secs, Some(47));
        assert_eq!(e.sip_response_code, Some(200));
        // 2010-08-31T20:36:44Z
        assert_eq!(e.timestamp_ms, Some(1_283_287_004_000));
        assert_eq!(e.idempotency_token.as_deref(), Some("idem-1"));
        assert_eq!(e.to.unwrap().phone().unwrap().as_str(), "+14155552671");
        let key = parse_status_callback(&req).unwrap().dedup_key();
        assert_eq!(key, format!("call:{CALL}:completed:3"));
    }

    #[test]
    fn call_status_callback_ringing_and_initiated() {
        for (raw, want, seq) in [
            ("initiated", CallStatus::Initiated, "0"),
            ("ringing", CallStatus::Ringing, "1"),
            ("in-progress", CallStatus::InProgress, "2"),
            ("no-answer", CallStatus::NoAnswer, "2"),
            ("busy", CallStatus::Busy, "2"),
            ("canceled", CallStatus::Canceled, "1"),
            ("failed", CallStatus::Failed, "1"),
        ] {
            let req = form(&[
                ("AccountSid", ACCOUNT),
                ("CallSid", CALL),
                ("CallStatus", raw),
                ("CallbackSource", "call-progress-events"),
                ("Direction", "outbound-api"),
                ("SequenceNumber", seq),
                ("Timestamp", "Wed, 01 Jan 2025 12:00:00 +0000"),
            ]);
            let StatusEvent::Call(e) = parse_status_callback(&req).unwrap() else {
                panic!("{raw}");
            };
            assert_eq!(e.status, want, "{raw}");
            assert_eq!(e.duration_secs, None);
        }
        // A bad SequenceNumber is refused, a bad Timestamp only dropped.
        let req = form(&[
            ("AccountSid", ACCOUNT),
            ("CallSid", CALL),
            ("CallStatus", "ringing"),
            ("SequenceNumber", "one"),
        ]);
        assert_eq!(
            parse_status_callback(&req),
            Err(WebhookError::InvalidField {
                field: "SequenceNumber"
            })
        );
        let req = form(&[
            ("AccountSid", ACCOUNT),
            ("CallSid", CALL),
            ("CallStatus", "ringing"),
            ("Timestamp", "yesterday"),
        ]);
        let StatusEvent::Call(e) = parse_status_callback(&req).unwrap() else {
            panic!()
        };
        assert_eq!(e.timestamp_ms, None);
        assert_eq!(e.sequence, None);
    }

    /// `recordingStatusCallback` for a completed dual-channel recording.
    #[test]
    fn recording_status_callback() {
        let url = format!(
            "https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/\
             REcccccccccccccccccccccccccccccccc"
        );
        let req = form(&[
            ("AccountSid", ACCOUNT),
            ("CallSid", CALL),
            ("ErrorCode", "0"),
            ("RecordingChannels", "2"),
            ("RecordingDuration", "46"),
            ("RecordingSid", "REcccccccccccccccccccccccccccccccc"),
            ("RecordingSource", "OutboundAPI"),
            ("RecordingStartTime", "Tue, 31 Aug 2010 20:35:58 +0000"),
            ("RecordingStatus", "completed"),
            ("RecordingTrack", "both"),
            ("RecordingUrl", &url),
        ]);
        let event = parse_status_callback(&req).unwrap();
        assert_eq!(
            event.dedup_key(),
            "recording:REcccccccccccccccccccccccccccccccc:completed"
        );
        let StatusEvent::Recording(e) = event else {
            panic!()
        };
        assert_eq!(e.status, RecordingStatus::Completed);
        assert_eq!(e.duration_secs, Some(46));
        assert_eq!(e.channels, Some(2));
        assert_eq!(e.error_code, None, "ErrorCode 0 means none");
        assert_eq!(e.url.as_deref(), Some(url.as_str()));
        assert_eq!(e.source.as_deref(), Some("OutboundAPI"));
        assert_eq!(e.started_at_ms, Some(1_283_286_958_000));

        let absent = form(&[
            ("AccountSid", ACCOUNT),
            ("CallSid", CALL),
            ("ErrorCode", "13617"),
            ("RecordingSid", "REcccccccccccccccccccccccccccccccc"),
            ("RecordingStatus", "absent"),
        ]);
        let StatusEvent::Recording(e) = parse_status_callback(&absent).unwrap() else {
            panic!()
        };
        assert_eq!(e.status, RecordingStatus::Absent);
        assert_eq!(e.error_code, Some(13617));
    }

    /// The `<Stream statusCallback>` fields.
    #[test]
    fn stream_status_callbacks() {
        let fields = |event: &'static str| {
            form(&[
                ("AccountSid", ACCOUNT),
                ("CallSid", CALL),
                ("StreamEvent", event),
                ("StreamName", "callstream"),
                ("StreamSid", "MZdddddddddddddddddddddddddddddddd"),
                ("Timestamp", "2025-01-01T12:00:00.250Z"),
            ])
        };
        let StatusEvent::Stream(e) = parse_status_callback(&fields("stream-started")).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.status, StreamStatus::Started);
        assert_eq!(e.stream_id, "MZdddddddddddddddddddddddddddddddd");
        assert_eq!(e.stream_name.as_deref(), Some("callstream"));
        assert_eq!(e.timestamp_ms, Some(1_735_732_800_250));
        let StatusEvent::Stream(e) = parse_status_callback(&fields("stream-stopped")).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.status, StreamStatus::Stopped);

        let err = form(&[
            ("AccountSid", ACCOUNT),
            ("CallSid", CALL),
            ("StreamError", "Stream - WebSocket - Connection Refused"),
            ("StreamEvent", "stream-error"),
            ("StreamSid", "MZdddddddddddddddddddddddddddddddd"),
        ]);
        let event = parse_status_callback(&err).unwrap();
        assert_eq!(
            event.dedup_key(),
            "stream:MZdddddddddddddddddddddddddddddddd:failed"
        );
        let StatusEvent::Stream(e) = event else {
            panic!()
        };
        assert_eq!(e.status, StreamStatus::Failed);
        assert_eq!(
            e.error.as_deref(),
            Some("Stream - WebSocket - Connection Refused")
        );
    }

    #[test]
    fn signatures_over_form_and_json_bodies() {
        let token = Secret::new("12345");
        let mut req = form(&voice_fields());
        req.url = "https://gw.example.com/v1/providers/twilio/voice".into();
        assert_eq!(verify(&token, &req), Err(WebhookError::MissingSignature));
        let params = Params::from_request(&req).unwrap();
        // Signed independently of the parsing above: over the pairs as given.
        let pairs: Vec<(String, String)> = voice_fields()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(params.as_slice(), pairs.as_slice());
        let sig = signature::compute("12345", &req.url, &pairs);
        req.signature = Some(sig.clone());
        assert_eq!(verify(&token, &req), Ok(()));
        assert_eq!(
            verify(&Secret::new("54321"), &req),
            Err(WebhookError::BadSignature)
        );
        // The default port variant is accepted, another host is not.
        req.url = "https://gw.example.com:443/v1/providers/twilio/voice".into();
        assert_eq!(verify(&token, &req), Ok(()));
        req.url = "https://evil.example.com/v1/providers/twilio/voice".into();
        assert_eq!(verify(&token, &req), Err(WebhookError::BadSignature));

        // JSON body: the URL carries bodySHA256 and is signed alone (the
        // vector from Twilio's SDK tests, see signature.rs).
        let json = WebhookRequest {
            url: "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=\
                  0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
                .into(),
            content_type: Some("application/json; charset=utf-8".into()),
            body: Bytes::from_static(br#"{"property": "value", "boolean": true}"#),
            signature: Some("a9nBmqA0ju/hNViExpshrM61xv4=".into()),
            idempotency_token: None,
        };
        assert_eq!(verify(&token, &json), Ok(()));
        let mut tampered = json.clone();
        tampered.body = Bytes::from_static(br#"{"property": "value", "boolean": false}"#);
        assert_eq!(verify(&token, &tampered), Err(WebhookError::BadSignature));
        assert!(matches!(
            parse_status_callback(&json),
            Err(WebhookError::Malformed(_))
        ));
    }

    #[test]
    fn account_id_from_form_and_json() {
        assert_eq!(account_id(&form(&voice_fields())).unwrap(), ACCOUNT);
        assert_eq!(
            account_id(&form(&[("CallSid", CALL)])),
            Err(WebhookError::MissingField("AccountSid"))
        );
        let json = WebhookRequest {
            url: URL.into(),
            content_type: Some("application/json".into()),
            body: Bytes::from(format!(r#"{{"AccountSid":"{ACCOUNT}"}}"#)),
            signature: None,
            idempotency_token: None,
        };
        assert_eq!(account_id(&json).unwrap(), ACCOUNT);
        let mut bad = json.clone();
        bad.body = Bytes::from_static(b"{not json");
        assert!(matches!(account_id(&bad), Err(WebhookError::Malformed(_))));
    }

    #[test]
    fn sid_shapes() {
        assert!(is_sid(ACCOUNT, "AC"));
        assert!(!is_sid(ACCOUNT, "CA"));
        assert!(!is_sid("ACaaaa", "AC"));
        assert!(!is_sid("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaz", "AC"));
        assert!(!is_sid("AC/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "AC"));
        assert!(!is_sid("ACéaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "AC"));
    }
}
