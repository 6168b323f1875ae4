//! The Twilio adapter against a real HTTP server on 127.0.0.1 (the mock in
//! `common/mock_twilio.rs`): each test checks the request Twilio would get
//! (method, path, form fields, Basic auth) and how Twilio-shaped answers,
//! errors, redirects and silences come back as typed results.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use callstream::phone::E164;
use callstream::providers::twilio::TwilioProvider;
use callstream::providers::*;
use callstream::secret::Secret;
use common::mock_twilio::*;
use common::{ACCOUNT_SID, AUTH_TOKEN};
use hmac::{Hmac, Mac};
use url::Url;

const FORM: &str = "application/x-www-form-urlencoded";

/// A real 8 kHz 16-bit PCM WAV, the format of Twilio's `.wav` recordings.
fn fixture_wav() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/media-fixtures/call-caller.wav"
    ))
    .unwrap()
}

async fn setup() -> (MockTwilio, TwilioProvider) {
    let mock = MockTwilio::start(fixture_wav()).await;
    let provider = TwilioProvider::new(mock.base_url.clone(), Duration::from_secs(10)).unwrap();
    (mock, provider)
}

fn creds() -> Credentials {
    Credentials::new(ACCOUNT_SID, Secret::new(AUTH_TOKEN))
}

fn e164(s: &str) -> E164 {
    E164::parse(s).unwrap()
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn assert_authed(r: &common::mock_twilio::Recorded) {
    assert_eq!(
        r.basic_auth,
        Some((ACCOUNT_SID.to_string(), AUTH_TOKEN.to_string())),
        "{} {}",
        r.method,
        r.path
    );
}

fn assert_form(r: &common::mock_twilio::Recorded) {
    assert_eq!(r.method, "POST");
    assert!(
        r.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with(FORM)),
        "{:?}",
        r.content_type
    );
    assert_authed(r);
}

fn expect_api(err: ProviderError, status: u16, code: Option<u32>) -> ProviderError {
    match &err {
        ProviderError::Api {
            status: s, code: c, ..
        } => {
            assert_eq!((*s, *c), (status, code), "{err:?}");
        }
        other => panic!("expected API error {status}, got {other:?}"),
    }
    err
}

#[tokio::test]
async fn search_numbers_sends_filters_and_reads_the_list() {
    let (mock, twilio) = setup().await;
    let found = twilio
        .search_numbers(
            &creds(),
            &NumberSearch {
                country: "us".into(),
                kind: NumberKind::Local,
                area_code: Some("415".into()),
                contains: Some("55*".into()),
                limit: 5,
            },
        )
        .await
        .unwrap();
    let r = mock.last();
    assert_eq!(r.method, "GET");
    assert_eq!(r.account_path(), "AvailablePhoneNumbers/US/Local.json");
    assert_authed(&r);
    assert_eq!(r.query("AreaCode"), Some("415"));
    assert_eq!(r.query("Contains"), Some("55*"));
    assert_eq!(r.query("VoiceEnabled"), Some("true"));
    assert_eq!(r.query("PageSize"), Some("5"));

    assert_eq!(found.len(), 2);
    assert_eq!(found[0].number.as_str(), "+14155550142");
    assert_eq!(found[0].locality.as_deref(), Some("San Francisco"));
    assert_eq!(found[0].region.as_deref(), Some("CA"));
    assert_eq!(found[0].iso_country.as_deref(), Some("US"));
    assert_eq!(
        found[0].capabilities,
        Capabilities {
            voice: true,
            sms: false,
            mms: true
        }
    );
    // Older answers spell SMS/MMS in capitals; empty strings are absent.
    assert_eq!(
        found[1].capabilities,
        Capabilities {
            voice: true,
            sms: true,
            mms: false
        }
    );
    assert_eq!(found[1].locality, None);
}

#[tokio::test]
async fn search_numbers_refuses_bad_input_before_any_request() {
    let (mock, twilio) = setup().await;
    let base = NumberSearch {
        country: "US".into(),
        kind: NumberKind::Local,
        area_code: None,
        contains: None,
        limit: 10,
    };
    for bad in [
        NumberSearch {
            country: "USA".into(),
            ..base.clone()
        },
        NumberSearch {
            country: "../".into(),
            ..base.clone()
        },
        NumberSearch {
            limit: 0,
            ..base.clone()
        },
        NumberSearch {
            limit: 1000,
            ..base.clone()
        },
        NumberSearch {
            area_code: Some("41".into()),
            ..base.clone()
        },
        NumberSearch {
            contains: Some("5&x=1".into()),
            ..base.clone()
        },
    ] {
        let err = twilio.search_numbers(&creds(), &bad).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::InvalidRequest(_)),
            "{bad:?}: {err:?}"
        );
        assert!(!err.is_retryable());
    }
    assert!(mock.requests().is_empty());

    // A country Twilio has no numbers in: its 404, permanent.
    let err = twilio
        .search_numbers(
            &creds(),
            &NumberSearch {
                country: "ZZ".into(),
                kind: NumberKind::TollFree,
                ..base
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        mock.last().account_path(),
        "AvailablePhoneNumbers/ZZ/TollFree.json"
    );
    let err = expect_api(err, 404, Some(20404));
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn provision_then_release_a_number() {
    let (mock, twilio) = setup().await;
    let number = twilio
        .provision_number(
            &creds(),
            &ProvisionRequest {
                number: e164("+14155550142"),
                voice_url: url("https://gw.example.com/v1/providers/twilio/voice"),
                status_callback: Some(url("https://gw.example.com/v1/providers/twilio/status")),
                friendly_name: Some("Support line".into()),
            },
        )
        .await
        .unwrap();
    let r = mock.last();
    assert_form(&r);
    assert_eq!(r.account_path(), "IncomingPhoneNumbers.json");
    assert_eq!(r.one("PhoneNumber"), "+14155550142");
    assert_eq!(
        r.one("VoiceUrl"),
        "https://gw.example.com/v1/providers/twilio/voice"
    );
    assert_eq!(r.one("VoiceMethod"), "POST");
    assert_eq!(
        r.one("StatusCallback"),
        "https://gw.example.com/v1/providers/twilio/status"
    );
    assert_eq!(r.one("StatusCallbackMethod"), "POST");
    assert_eq!(r.one("FriendlyName"), "Support line");

    assert_eq!(number.number.as_str(), "+14155550142");
    assert_eq!(number.provider_id, "PN00000000000000000000014155550142");
    assert_eq!(number.friendly_name.as_deref(), Some("Support line"));
    assert!(number.capabilities.voice);

    twilio
        .release_number(&creds(), &number.provider_id)
        .await
        .unwrap();
    let r = mock.last();
    assert_eq!(r.method, "DELETE");
    assert_eq!(
        r.account_path(),
        "IncomingPhoneNumbers/PN00000000000000000000014155550142.json"
    );
    assert_authed(&r);

    // Released twice: Twilio's 404, not retryable.
    let err = twilio
        .release_number(&creds(), &number.provider_id)
        .await
        .unwrap_err();
    assert!(!expect_api(err, 404, Some(20404)).is_retryable());

    // A malformed id never reaches the API.
    let before = mock.requests().len();
    let err = twilio
        .release_number(&creds(), "PN/../../Calls/CA1")
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidRequest(_)));
    assert_eq!(mock.requests().len(), before);
}

#[tokio::test]
async fn provisioning_an_unavailable_number_is_a_permanent_error() {
    let (_mock, twilio) = setup().await;
    let err = twilio
        .provision_number(
            &creds(),
            &ProvisionRequest {
                number: e164(UNAVAILABLE_NUMBER),
                voice_url: url("https://gw.example.com/v1/providers/twilio/voice"),
                status_callback: None,
                friendly_name: None,
            },
        )
        .await
        .unwrap_err();
    let err = expect_api(err, 400, Some(21422));
    assert!(!err.is_retryable());
    assert!(
        err.user_message().contains("is not available"),
        "{}",
        err.user_message()
    );
    // Display keeps the number out of logs.
    assert!(!err.to_string().contains("5550000"), "{err}");
    let ProviderError::Api { more_info, .. } = &err else {
        unreachable!()
    };
    assert_eq!(
        more_info.as_deref(),
        Some("https://www.twilio.com/docs/errors/21422")
    );
}

#[tokio::test]
async fn outbound_call_with_callbacks_and_recording() {
    let (mock, twilio) = setup().await;
    let call = twilio
        .create_call(
            &creds(),
            &OutboundCall {
                to: e164("+14155552671"),
                from: e164("+14155550100"),
                on_answer: CallInstructions::Url(url(
                    "https://gw.example.com/v1/providers/twilio/voice?call=c1",
                )),
                status_callback: url("https://gw.example.com/v1/providers/twilio/status"),
                status_events: CallProgressEvent::ALL.to_vec(),
                ring_timeout_secs: Some(30),
                record: Some(RecordingOptions {
                    status_callback: url("https://gw.example.com/v1/providers/twilio/recording"),
                    dual_channel: true,
                }),
            },
        )
        .await
        .unwrap();
    let r = mock.last();
    assert_form(&r);
    assert_eq!(r.account_path(), "Calls.json");
    assert_eq!(r.one("To"), "+14155552671");
    assert_eq!(r.one("From"), "+14155550100");
    assert_eq!(
        r.one("Url"),
        "https://gw.example.com/v1/providers/twilio/voice?call=c1"
    );
    assert_eq!(r.one("Method"), "POST");
    assert!(!r.has("Twiml"));
    assert_eq!(
        r.one("StatusCallback"),
        "https://gw.example.com/v1/providers/twilio/status"
    );
    assert_eq!(r.one("StatusCallbackMethod"), "POST");
    assert_eq!(
        r.all("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    assert_eq!(r.one("Timeout"), "30");
    assert_eq!(r.one("Record"), "true");
    assert_eq!(r.one("RecordingChannels"), "dual");
    assert_eq!(
        r.one("RecordingStatusCallback"),
        "https://gw.example.com/v1/providers/twilio/recording"
    );
    assert_eq!(r.one("RecordingStatusCallbackMethod"), "POST");
    assert_eq!(
        r.all("RecordingStatusCallbackEvent"),
        ["completed", "absent"]
    );

    assert!(call.call_id.starts_with("CA") && call.call_id.len() == 34);
    assert_eq!(call.status, CallStatus::Queued);
    assert_eq!(call.direction, Some(CallDirection::OutboundApi));
    assert_eq!(call.to.unwrap().phone().unwrap().as_str(), "+14155552671");
    assert_eq!(call.parent_call_id, None);

    // Inline TwiML instead of a URL, no recording, only the final event.
    let doc = twilio
        .answer_document(&StreamAnswer {
            announcement: None,
            stream_url: url("wss://gw.example.com/v1/providers/twilio/stream"),
            mode: StreamMode::Bidirectional,
            parameters: vec![("token".into(), "v1.t.CA.1.sig".into())],
            status_callback: None,
            stream_name: None,
        })
        .unwrap();
    twilio
        .create_call(
            &creds(),
            &OutboundCall {
                to: e164("+442079460958"),
                from: e164("+14155550100"),
                on_answer: CallInstructions::Document(doc.body.clone()),
                status_callback: url("https://gw.example.com/v1/providers/twilio/status"),
                status_events: vec![CallProgressEvent::Completed],
                ring_timeout_secs: None,
                record: None,
            },
        )
        .await
        .unwrap();
    let r = mock.last();
    assert_eq!(r.one("Twiml"), doc.body);
    assert!(!r.has("Url") && !r.has("Record") && !r.has("Timeout"));
    assert_eq!(r.all("StatusCallbackEvent"), ["completed"]);
    let xml = roxmltree::Document::parse(r.one("Twiml")).unwrap();
    let param = xml
        .descendants()
        .find(|n| n.has_tag_name("Parameter"))
        .unwrap();
    assert_eq!(param.attribute("value"), Some("v1.t.CA.1.sig"));
}

#[tokio::test]
async fn outbound_call_to_an_invalid_number_is_permanent() {
    let (_mock, twilio) = setup().await;
    let err = twilio
        .create_call(
            &creds(),
            &OutboundCall {
                to: e164(INVALID_TO),
                from: e164("+14155550100"),
                on_answer: CallInstructions::Url(url("https://gw.example.com/voice")),
                status_callback: url("https://gw.example.com/status"),
                status_events: vec![],
                ring_timeout_secs: Some(4),
                record: None,
            },
        )
        .await
        .unwrap_err();
    // Refused locally: Twilio's minimum ring timeout is 5 s.
    assert!(matches!(err, ProviderError::InvalidRequest(_)));

    let err = twilio
        .create_call(
            &creds(),
            &OutboundCall {
                to: e164(INVALID_TO),
                from: e164("+14155550100"),
                on_answer: CallInstructions::Url(url("https://gw.example.com/voice")),
                status_callback: url("https://gw.example.com/status"),
                status_events: vec![],
                ring_timeout_secs: None,
                record: None,
            },
        )
        .await
        .unwrap_err();
    let err = expect_api(err, 400, Some(21211));
    assert!(!err.is_retryable());
    assert!(err.user_message().contains("is not a valid phone number"));
}

#[tokio::test]
async fn live_call_controls() {
    let (mock, twilio) = setup().await;
    let call_id = "CA0123456789abcdef0123456789abcdef";

    let info = twilio.hang_up(&creds(), call_id).await.unwrap();
    let r = mock.last();
    assert_form(&r);
    assert_eq!(r.account_path(), format!("Calls/{call_id}.json"));
    assert_eq!(r.form, [("Status".to_string(), "completed".to_string())]);
    assert_eq!(info.status, CallStatus::Completed);
    assert_eq!(info.call_id, call_id);

    let info = twilio
        .redirect_call(
            &creds(),
            call_id,
            &CallInstructions::Url(url(
                "https://gw.example.com/v1/providers/twilio/voice?resume=1",
            )),
        )
        .await
        .unwrap();
    let r = mock.last();
    assert_eq!(r.account_path(), format!("Calls/{call_id}.json"));
    assert_eq!(
        r.one("Url"),
        "https://gw.example.com/v1/providers/twilio/voice?resume=1"
    );
    assert_eq!(r.one("Method"), "POST");
    assert_eq!(info.status, CallStatus::InProgress);

    // Transfer: the call gets new TwiML that dials the target.
    twilio
        .transfer_call(
            &creds(),
            call_id,
            &TransferTarget {
                to: e164("+14155550123"),
                caller_id: Some(e164("+14155550100")),
                announcement: Some(Announcement::text("Please hold while I transfer you.")),
                ring_timeout_secs: Some(20),
            },
        )
        .await
        .unwrap();
    let r = mock.last();
    assert_eq!(r.account_path(), format!("Calls/{call_id}.json"));
    let xml = roxmltree::Document::parse(r.one("Twiml")).unwrap();
    let dial = xml.descendants().find(|n| n.has_tag_name("Dial")).unwrap();
    assert_eq!(dial.attribute("callerId"), Some("+14155550100"));
    assert_eq!(dial.attribute("timeout"), Some("20"));
    let number = dial.children().find(|n| n.has_tag_name("Number")).unwrap();
    assert_eq!(number.text(), Some("+14155550123"));

    // Hold / unhold / mute / unmute through the conference participant.
    let leg = ConferenceLeg {
        conference_id: "CFaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
        call_id: call_id.into(),
    };
    let participant_path =
        format!("Conferences/CFaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/Participants/{call_id}.json");
    // (update, form Twilio must get, hold and muted it answers with)
    type Case = (
        ParticipantUpdate,
        &'static [(&'static str, &'static str)],
        bool,
        bool,
    );
    let cases: [Case; 4] = [
        (
            ParticipantUpdate {
                hold: Some(true),
                hold_music: Some(url("https://gw.example.com/hold.mp3")),
                ..Default::default()
            },
            &[
                ("Hold", "true"),
                ("HoldUrl", "https://gw.example.com/hold.mp3"),
            ],
            true,
            false,
        ),
        (
            ParticipantUpdate {
                hold: Some(false),
                hold_music: Some(url("https://gw.example.com/hold.mp3")),
                ..Default::default()
            },
            &[("Hold", "false")],
            false,
            false,
        ),
        (
            ParticipantUpdate {
                muted: Some(true),
                ..Default::default()
            },
            &[("Muted", "true")],
            false,
            true,
        ),
        (
            ParticipantUpdate {
                muted: Some(false),
                ..Default::default()
            },
            &[("Muted", "false")],
            false,
            false,
        ),
    ];
    for (update, want_form, hold, muted) in cases {
        let state = twilio
            .update_participant(&creds(), &leg, &update)
            .await
            .unwrap();
        let r = mock.last();
        assert_form(&r);
        assert_eq!(r.account_path(), participant_path);
        let want: Vec<(String, String)> = want_form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(r.form, want, "{update:?}");
        assert_eq!((state.hold, state.muted), (hold, muted), "{update:?}");
        assert_eq!(state.call_id, call_id);
        assert_eq!(state.conference_id, leg.conference_id);
    }

    // Nothing to change, or ids that are not SIDs: refused locally.
    let before = mock.requests().len();
    for (leg, update) in [
        (leg.clone(), ParticipantUpdate::default()),
        (
            ConferenceLeg {
                conference_id: "MyRoom".into(),
                call_id: call_id.into(),
            },
            ParticipantUpdate {
                muted: Some(true),
                ..Default::default()
            },
        ),
    ] {
        let err = twilio
            .update_participant(&creds(), &leg, &update)
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::InvalidRequest(_)), "{err:?}");
    }
    assert!(twilio.hang_up(&creds(), "CA123").await.is_err());
    assert_eq!(mock.requests().len(), before);

    // Unknown call / conference: Twilio's 404.
    let err = twilio.hang_up(&creds(), UNKNOWN_CALL).await.unwrap_err();
    expect_api(err, 404, Some(20404));
    let err = twilio
        .update_participant(
            &creds(),
            &ConferenceLeg {
                conference_id: UNKNOWN_CONFERENCE.into(),
                call_id: call_id.into(),
            },
            &ParticipantUpdate {
                hold: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    expect_api(err, 404, Some(20404));
}

#[tokio::test]
async fn wrong_credentials_are_a_permanent_401() {
    let (mock, twilio) = setup().await;
    let wrong = Credentials::new(ACCOUNT_SID, Secret::new("not-the-token"));
    let err = twilio
        .hang_up(&wrong, "CA0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    assert_eq!(
        mock.last().basic_auth,
        Some((ACCOUNT_SID.to_string(), "not-the-token".to_string()))
    );
    let err = expect_api(err, 401, Some(20003));
    assert!(!err.is_retryable());
    // The token never shows in errors or debug output.
    assert!(!format!("{err} {err:?} {wrong:?}").contains("not-the-token"));
}

#[tokio::test]
async fn server_failures_are_retryable() {
    let (_mock, twilio) = setup().await;
    let err = twilio.hang_up(&creds(), FAILING_CALL).await.unwrap_err();
    let err = expect_api(err, 500, Some(20500));
    assert!(err.is_retryable());

    let err = twilio.hang_up(&creds(), THROTTLED_CALL).await.unwrap_err();
    let err = expect_api(err, 429, Some(20429));
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));

    // A 503 HTML page from a proxy: still typed, still retryable.
    let err = twilio
        .hang_up(&creds(), UNAVAILABLE_CALL)
        .await
        .unwrap_err();
    let err = expect_api(err, 503, None);
    assert!(err.is_retryable());
    assert_eq!(err.user_message(), "Service Unavailable");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let (silent, task) = silent_server().await;
    let twilio = TwilioProvider::new(silent, Duration::from_millis(300)).unwrap();
    let err = twilio
        .hang_up(&creds(), "CA0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Timeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let err = twilio
        .fetch_recording(
            &creds(),
            &RecordingLocator::Id("REcccccccccccccccccccccccccccccccc".into()),
            RecordingFetch::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Timeout(_)), "{err:?}");
    task.abort();
}

#[tokio::test]
async fn connection_refused_is_a_retryable_transport_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let twilio =
        TwilioProvider::new(url(&format!("http://{addr}")), Duration::from_secs(5)).unwrap();
    let err = twilio
        .hang_up(&creds(), "CA0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Transport(_)), "{err:?}");
    assert!(err.is_retryable());
    assert!(!err.to_string().contains(ACCOUNT_SID), "{err}");
}

#[tokio::test]
async fn recording_download_streams_the_wav() {
    let (mock, twilio) = setup().await;
    let wav = fixture_wav();
    // The URL exactly as a recording status callback carries it.
    let webhook_url = mock.recording_url("REcccccccccccccccccccccccccccccccc");
    let dl = twilio
        .fetch_recording(
            &creds(),
            &RecordingLocator::Url(webhook_url),
            RecordingFetch::default(),
        )
        .await
        .unwrap();
    assert_eq!(dl.content_type.as_deref(), Some("audio/x-wav"));
    assert_eq!(dl.content_length, Some(wav.len() as u64));
    let bytes = dl.into_bytes(10 << 20).await.unwrap();
    assert_eq!(bytes, wav);
    let reader = hound::WavReader::new(std::io::Cursor::new(&bytes)).unwrap();
    assert_eq!(reader.spec().sample_rate, 8000);
    assert_eq!(reader.spec().bits_per_sample, 16);
    assert_eq!(reader.duration(), 15 * 8000);

    let r = mock.last();
    assert_eq!(r.method, "GET");
    assert_eq!(
        r.account_path(),
        "Recordings/REcccccccccccccccccccccccccccccccc.wav"
    );
    assert_authed(&r);
    assert_eq!(r.query("RequestedChannels"), None);

    // Dual channel, by id; and a body larger than allowed is refused.
    let dl = twilio
        .fetch_recording(
            &creds(),
            &RecordingLocator::Id("REcccccccccccccccccccccccccccccccc".into()),
            RecordingFetch { dual_channel: true },
        )
        .await
        .unwrap();
    assert_eq!(mock.last().query("RequestedChannels"), Some("2"));
    assert!(matches!(
        dl.into_bytes(1000).await,
        Err(ProviderError::TooLarge { limit: 1000 })
    ));
}

#[tokio::test]
async fn recording_redirect_to_storage_drops_the_credentials() {
    let (mock, twilio) = setup().await;
    let bytes = twilio
        .fetch_recording(
            &creds(),
            &RecordingLocator::Id(REDIRECTED_RECORDING.into()),
            RecordingFetch::default(),
        )
        .await
        .unwrap()
        .into_bytes(10 << 20)
        .await
        .unwrap();
    assert_eq!(bytes, fixture_wav());
    assert_authed(&mock.last());
    assert_eq!(mock.storage_requests(), [None], "storage saw credentials");
}

#[tokio::test]
async fn recording_errors() {
    let (mock, twilio) = setup().await;
    let err = twilio
        .fetch_recording(
            &creds(),
            &RecordingLocator::Id(MISSING_RECORDING.into()),
            RecordingFetch::default(),
        )
        .await
        .unwrap_err();
    assert!(!expect_api(err, 404, Some(20404)).is_retryable());

    // A URL on another origin or account never gets our credentials.
    let before = mock.requests().len();
    for foreign in [
        "https://attacker.example.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/REcccccccccccccccccccccccccccccccc".to_string(),
        mock.recording_url("REcccccccccccccccccccccccccccccccc")
            .replace(ACCOUNT_SID, "ACffffffffffffffffffffffffffffffff"),
    ] {
        let err = twilio
            .fetch_recording(&creds(), &RecordingLocator::Url(foreign), RecordingFetch::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::InvalidRequest(_)), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert_eq!(mock.requests().len(), before);

    // A body that stalls mid-way: the chunk deadline fires.
    let twilio = TwilioProvider::new(mock.base_url.clone(), Duration::from_millis(300)).unwrap();
    let dl = twilio
        .fetch_recording(
            &creds(),
            &RecordingLocator::Id(STALLING_RECORDING.into()),
            RecordingFetch::default(),
        )
        .await
        .unwrap();
    let err = dl.into_bytes(10 << 20).await.unwrap_err();
    assert!(matches!(err, ProviderError::Timeout(_)), "{err:?}");
    assert!(err.is_retryable());
}

/// Twilio's signature, computed here from its definition (base64 of
/// HMAC-SHA1 over the URL and the sorted name+value pairs), not with the
/// crate's own signer.
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
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

/// The trait as the routes will hold it: behind `Arc<dyn …>`, one client
/// for all tenants; webhook in, TwiML out.
#[tokio::test]
async fn inbound_call_through_the_trait_object() {
    let (_mock, twilio) = setup().await;
    let provider: Arc<dyn TelephonyProvider> = Arc::new(twilio);
    assert_eq!(provider.name(), "twilio");

    let url = "https://gw.example.com/v1/providers/twilio/voice";
    let fields = [
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", "CAfeedfacefeedfacefeedfacefeedface"),
        ("CallStatus", "ringing"),
        ("Called", "+14155550100"),
        ("Caller", "+14155552671"),
        ("Direction", "inbound"),
        ("From", "+14155552671"),
        ("FromCountry", "US"),
        ("To", "+14155550100"),
        ("ToCountry", "US"),
    ];
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let mut req = WebhookRequest {
        url: url.into(),
        content_type: Some(FORM.into()),
        body: body.into(),
        signature: Some(twilio_signature(AUTH_TOKEN, url, &fields)),
        idempotency_token: None,
    };
    assert_eq!(provider.webhook_account_id(&req).unwrap(), ACCOUNT_SID);
    provider
        .verify_webhook(&Secret::new(AUTH_TOKEN), &req)
        .unwrap();
    let call = provider.parse_inbound_call(&req).unwrap();
    assert_eq!(call.to.phone().unwrap().as_str(), "+14155550100");
    assert_eq!(call.from.phone().unwrap().as_str(), "+14155552671");
    assert_eq!(call.direction, CallDirection::Inbound);

    // Signed by someone else, or altered: refused.
    assert_eq!(
        provider.verify_webhook(&Secret::new("other-token"), &req),
        Err(WebhookError::BadSignature)
    );
    req.body = req.body.slice(..req.body.len() - 1);
    assert_eq!(
        provider.verify_webhook(&Secret::new(AUTH_TOKEN), &req),
        Err(WebhookError::BadSignature)
    );

    let doc = provider
        .answer_document(&StreamAnswer {
            announcement: Some(Announcement::text(
                "This call is recorded & transcribed for <quality> purposes.",
            )),
            stream_url: Url::parse("wss://gw.example.com/v1/providers/twilio/stream").unwrap(),
            mode: StreamMode::ForkBothTracks {
                keep_alive_secs: 14_400,
            },
            parameters: vec![("token".into(), "v1.tenant.CA1.123.sig&<>".into())],
            status_callback: Some(
                Url::parse("https://gw.example.com/v1/providers/twilio/status").unwrap(),
            ),
            stream_name: Some("callstream".into()),
        })
        .unwrap();
    assert!(doc.content_type.starts_with("text/xml"));
    let xml = roxmltree::Document::parse(&doc.body).unwrap();
    let verbs: Vec<_> = xml
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name().to_string())
        .collect();
    assert_eq!(verbs, ["Say", "Start", "Pause"]);
    let say = xml.descendants().find(|n| n.has_tag_name("Say")).unwrap();
    assert_eq!(
        say.text(),
        Some("This call is recorded & transcribed for <quality> purposes.")
    );
    let stream = xml
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .unwrap();
    assert_eq!(stream.attribute("track"), Some("both_tracks"));
    assert_eq!(stream.attribute("name"), Some("callstream"));
    let param = xml
        .descendants()
        .find(|n| n.has_tag_name("Parameter"))
        .unwrap();
    assert_eq!(param.attribute("value"), Some("v1.tenant.CA1.123.sig&<>"));

    let reject = provider.reject_document(&Rejection::Explain(Announcement::text(
        "Sorry, this number is not in service.",
    )));
    let xml = roxmltree::Document::parse(&reject.body).unwrap();
    let verbs: Vec<_> = xml
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name().to_string())
        .collect();
    assert_eq!(verbs, ["Say", "Hangup"]);
}
