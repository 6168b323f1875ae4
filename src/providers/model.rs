//! Provider-neutral requests, results and webhook events: what the product
//! asks of a telephony provider, in its own words. Twilio's names appear only
//! in `twilio/`.

use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use url::Url;

use super::ProviderError;
use crate::phone::E164;
use crate::secret::Secret;

/// A tenant's account at the provider (Twilio: Account SID + auth token).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub account_id: String,
    pub auth_token: Secret,
}

impl Credentials {
    pub fn new(account_id: impl Into<String>, auth_token: Secret) -> Self {
        Self {
            account_id: account_id.into(),
            auth_token,
        }
    }
}

// ---------------------------------------------------------------- numbers

/// The kind of number to search for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberKind {
    #[default]
    Local,
    TollFree,
    Mobile,
}

/// A search for numbers that can be bought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberSearch {
    /// ISO 3166-1 alpha-2 country, e.g. `US`.
    pub country: String,
    pub kind: NumberKind,
    /// NANP area code (US/CA), e.g. `415`.
    pub area_code: Option<String>,
    /// Digits (and `*` wildcards) the number must contain.
    pub contains: Option<String>,
    /// Most results wanted (the provider may return fewer).
    pub limit: u32,
}

/// What a number can do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    pub voice: bool,
    pub sms: bool,
    pub mms: bool,
}

/// A number offered by the provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AvailableNumber {
    pub number: E164,
    pub friendly_name: Option<String>,
    pub locality: Option<String>,
    pub region: Option<String>,
    pub iso_country: Option<String>,
    pub capabilities: Capabilities,
}

/// Buy `number` and point its calls at us.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    pub number: E164,
    /// Where the provider asks what to do with an inbound call.
    pub voice_url: Url,
    /// Where the provider reports the inbound calls' status.
    pub status_callback: Option<Url>,
    pub friendly_name: Option<String>,
}

/// A number now owned by the tenant's account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProvisionedNumber {
    /// The provider's id for the number (Twilio: `PN…`), needed to release it.
    pub provider_id: String,
    pub number: E164,
    pub friendly_name: Option<String>,
    pub capabilities: Capabilities,
}

// ---------------------------------------------------------------- calls

/// Call progress events we ask the provider to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallProgressEvent {
    Initiated,
    Ringing,
    Answered,
    Completed,
}

impl CallProgressEvent {
    pub const ALL: [CallProgressEvent; 4] = [
        CallProgressEvent::Initiated,
        CallProgressEvent::Ringing,
        CallProgressEvent::Answered,
        CallProgressEvent::Completed,
    ];
}

/// What the provider runs on a call: fetch instructions from a URL, or a
/// document we give inline (for Twilio, TwiML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallInstructions {
    Url(Url),
    Document(String),
}

/// Record an outbound call from answer on, reporting to `status_callback`.
#[derive(Debug, Clone)]
pub struct RecordingOptions {
    pub status_callback: Url,
    /// Each party on its own channel (caller left, callee right).
    pub dual_channel: bool,
}

/// Place a call from one of the tenant's numbers.
#[derive(Debug, Clone)]
pub struct OutboundCall {
    pub to: E164,
    pub from: E164,
    /// Run when the callee answers.
    pub on_answer: CallInstructions,
    /// Our status callback endpoint.
    pub status_callback: Url,
    pub status_events: Vec<CallProgressEvent>,
    /// Seconds to let it ring before giving up.
    pub ring_timeout_secs: Option<u32>,
    pub record: Option<RecordingOptions>,
}

/// A call's state as reported by the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    Failed,
    NoAnswer,
    Canceled,
}

impl CallStatus {
    /// Whether the call can change no further.
    pub fn is_terminal(self) -> bool {
        self.progress_rank() == 4
    }

    /// Position in the lifecycle, for ordering callbacks that arrive out of
    /// order: queued 0, initiated 1, ringing 2, in progress 3, any end 4.
    /// A status never moves a call to a lower rank.
    pub fn progress_rank(self) -> u8 {
        match self {
            CallStatus::Queued => 0,
            CallStatus::Initiated => 1,
            CallStatus::Ringing => 2,
            CallStatus::InProgress => 3,
            CallStatus::Completed
            | CallStatus::Busy
            | CallStatus::Failed
            | CallStatus::NoAnswer
            | CallStatus::Canceled => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Initiated => "initiated",
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in_progress",
            CallStatus::Completed => "completed",
            CallStatus::Busy => "busy",
            CallStatus::Failed => "failed",
            CallStatus::NoAnswer => "no_answer",
            CallStatus::Canceled => "canceled",
        }
    }
}

/// Which way a call goes, as the provider sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    /// Someone called one of the tenant's numbers.
    Inbound,
    /// We placed it through the API.
    OutboundApi,
    /// A leg dialled from a running call (transfer, `<Dial>`).
    OutboundDial,
}

impl CallDirection {
    pub fn is_inbound(self) -> bool {
        self == CallDirection::Inbound
    }
}

/// One end of a call: a phone number, or something else the provider can
/// connect (`client:alice`, `sip:…`, `anonymous`).
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Party {
    Phone(E164),
    Other(String),
}

impl Party {
    /// Canonical number when the value is one; anything else kept verbatim.
    pub fn from_provider(raw: &str) -> Self {
        match E164::parse(raw) {
            Ok(n) => Party::Phone(n),
            Err(_) => Party::Other(raw.to_string()),
        }
    }

    pub fn phone(&self) -> Option<&E164> {
        match self {
            Party::Phone(n) => Some(n),
            Party::Other(_) => None,
        }
    }
}

impl fmt::Debug for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Party::Phone(n) => write!(f, "{n:?}"),
            Party::Other(_) => f.write_str("Party(other, redacted)"),
        }
    }
}

/// A call as the provider describes it after a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallInfo {
    /// The provider's call id (Twilio: `CA…`).
    pub call_id: String,
    pub status: CallStatus,
    pub direction: Option<CallDirection>,
    pub from: Option<Party>,
    pub to: Option<Party>,
    pub parent_call_id: Option<String>,
}

/// A call's leg in a conference, the unit hold and mute act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceLeg {
    /// The provider's conference id (Twilio: `CF…`).
    pub conference_id: String,
    pub call_id: String,
}

/// Change a conference participant; `None` leaves a setting alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParticipantUpdate {
    pub hold: Option<bool>,
    pub muted: Option<bool>,
    /// Music or message played while on hold (provider default if `None`).
    pub hold_music: Option<Url>,
}

/// A conference participant after an update.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParticipantState {
    pub conference_id: String,
    pub call_id: String,
    pub hold: bool,
    pub muted: bool,
}

/// Where a transferred call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferTarget {
    pub to: E164,
    /// Caller id shown to the new party (one of the tenant's numbers).
    pub caller_id: Option<E164>,
    /// Said to the caller before dialling.
    pub announcement: Option<Announcement>,
    pub ring_timeout_secs: Option<u32>,
}

// ---------------------------------------------------------------- answering

/// Text the provider speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub text: String,
    /// Provider voice name (Twilio: `alice`, `Polly.Joanna`, …).
    pub voice: Option<String>,
    /// BCP 47 language, e.g. `en-US`.
    pub language: Option<String>,
}

impl Announcement {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            voice: None,
            language: None,
        }
    }
}

/// How the call's audio reaches our stream endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// Two-way stream that holds the call until the socket closes (we can
    /// play audio back). Twilio: `<Connect><Stream>`.
    Bidirectional,
    /// A one-way fork of both parties' audio while the call goes on; the
    /// call is kept open for `keep_alive_secs`. Twilio: `<Start><Stream
    /// track="both_tracks">` then `<Pause>`.
    ForkBothTracks { keep_alive_secs: u32 },
}

/// Answer an inbound call by streaming it to us.
#[derive(Debug, Clone)]
pub struct StreamAnswer {
    /// Spoken first (consent announcement), if any.
    pub announcement: Option<Announcement>,
    /// Our stream endpoint (`wss://…`; `ws://` for local testing).
    pub stream_url: Url,
    pub mode: StreamMode,
    /// Custom parameters echoed back in the stream's start message (the
    /// per-call token travels here).
    pub parameters: Vec<(String, String)>,
    /// Where the provider reports stream start/stop/error.
    pub status_callback: Option<Url>,
    pub stream_name: Option<String>,
}

/// Refuse an inbound call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Refuse without answering (no charge); the caller hears busy or a
    /// "not in service" tone.
    Reject { busy: bool },
    /// Answer, say why, hang up.
    Explain(Announcement),
}

/// A document answering a provider's voice webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerDocument {
    pub content_type: &'static str,
    pub body: String,
}

// ---------------------------------------------------------------- recordings

/// Which recording to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingLocator {
    /// The media URL the provider gave in its recording callback; it must
    /// belong to the configured API and the tenant's account.
    Url(String),
    /// The provider's recording id (Twilio: `RE…`).
    Id(String),
}

/// Download options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordingFetch {
    /// Ask for one channel per party (only for recordings made dual-channel).
    pub dual_channel: bool,
}

/// A recording being downloaded: headers now, body as a stream.
pub struct RecordingDownload {
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send>>,
}

impl fmt::Debug for RecordingDownload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingDownload")
            .field("content_type", &self.content_type)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

impl RecordingDownload {
    /// Reads the whole body, refusing more than `max_bytes`.
    pub async fn into_bytes(mut self, max_bytes: u64) -> Result<Vec<u8>, ProviderError> {
        if self.content_length.is_some_and(|n| n > max_bytes) {
            return Err(ProviderError::TooLarge { limit: max_bytes });
        }
        let mut out = Vec::with_capacity(
            self.content_length
                .map_or(0, |n| usize::try_from(n).unwrap_or(0)),
        );
        while let Some(chunk) = self.body.next().await {
            let chunk = chunk?;
            if out.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(ProviderError::TooLarge { limit: max_bytes });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- webhooks

/// A webhook request as received, before anything is trusted.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// The URL the provider called, rebuilt from the configured public base
    /// URL (scheme, host, port as the provider saw them) plus path and query.
    pub url: String,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// The signature header (Twilio: `X-Twilio-Signature`).
    pub signature: Option<String>,
    /// The provider's delivery id, the same on retries (Twilio:
    /// `I-Twilio-Idempotency-Token`).
    pub idempotency_token: Option<String>,
}

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook is not signed")]
    MissingSignature,
    #[error("webhook signature does not verify")]
    BadSignature,
    #[error("webhook body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("webhook body is malformed: {0}")]
    Malformed(&'static str),
    #[error("webhook lacks field {0}")]
    MissingField(&'static str),
    #[error("webhook field {field} is invalid")]
    InvalidField { field: &'static str },
}

/// An inbound call asking how to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundCall {
    pub account_id: String,
    pub call_id: String,
    pub from: Party,
    /// The tenant's number that was called (routes the call to a tenant).
    pub to: Party,
    pub status: CallStatus,
    pub direction: CallDirection,
    pub caller_name: Option<String>,
    pub forwarded_from: Option<Party>,
    pub parent_call_id: Option<String>,
}

/// A call status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallStatusEvent {
    pub account_id: String,
    pub call_id: String,
    pub status: CallStatus,
    pub direction: Option<CallDirection>,
    pub from: Option<Party>,
    pub to: Option<Party>,
    /// Order of this callback among the call's callbacks (Twilio:
    /// `SequenceNumber`, from 0).
    pub sequence: Option<u64>,
    /// When the provider says the event happened, unix ms.
    pub timestamp_ms: Option<i64>,
    /// Call length once it has ended.
    pub duration_secs: Option<u64>,
    pub sip_response_code: Option<u16>,
    /// `human`, `machine_start`, … when answering machine detection ran.
    pub answered_by: Option<String>,
    pub parent_call_id: Option<String>,
    pub idempotency_token: Option<String>,
}

/// State of a provider-side recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    InProgress,
    Paused,
    Stopped,
    Processing,
    Completed,
    Absent,
    Failed,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::InProgress => "in_progress",
            RecordingStatus::Paused => "paused",
            RecordingStatus::Stopped => "stopped",
            RecordingStatus::Processing => "processing",
            RecordingStatus::Completed => "completed",
            RecordingStatus::Absent => "absent",
            RecordingStatus::Failed => "failed",
        }
    }
}

/// A recording status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingEvent {
    pub account_id: String,
    pub call_id: String,
    pub recording_id: String,
    /// Media URL, for [`RecordingLocator::Url`].
    pub url: Option<String>,
    pub status: RecordingStatus,
    pub duration_secs: Option<u64>,
    pub channels: Option<u8>,
    pub started_at_ms: Option<i64>,
    /// How it was started (Twilio: `OutboundAPI`, `DialVerb`, …).
    pub source: Option<String>,
    pub error_code: Option<u32>,
    pub idempotency_token: Option<String>,
}

/// What happened to a media stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamStatus {
    Started,
    Stopped,
    Failed,
}

impl StreamStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Started => "started",
            StreamStatus::Stopped => "stopped",
            StreamStatus::Failed => "failed",
        }
    }
}

/// A media stream status callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStatusEvent {
    pub account_id: String,
    pub call_id: String,
    pub stream_id: String,
    pub stream_name: Option<String>,
    pub status: StreamStatus,
    /// The provider's description of a stream error.
    pub error: Option<String>,
    pub timestamp_ms: Option<i64>,
    pub idempotency_token: Option<String>,
}

/// A status callback of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusEvent {
    Call(CallStatusEvent),
    Recording(RecordingEvent),
    Stream(StreamStatusEvent),
}

impl StatusEvent {
    pub fn account_id(&self) -> &str {
        match self {
            StatusEvent::Call(e) => &e.account_id,
            StatusEvent::Recording(e) => &e.account_id,
            StatusEvent::Stream(e) => &e.account_id,
        }
    }

    pub fn call_id(&self) -> &str {
        match self {
            StatusEvent::Call(e) => &e.call_id,
            StatusEvent::Recording(e) => &e.call_id,
            StatusEvent::Stream(e) => &e.call_id,
        }
    }

    /// A key equal for re-deliveries of the same event and different for
    /// different events, to store with a unique constraint. Calls:
    /// `(call, status, sequence)`; recordings: `(recording, status)`;
    /// streams: `(stream, status)`. Built from the event's own fields, so it
    /// holds even when the provider's delivery token is absent.
    pub fn dedup_key(&self) -> String {
        match self {
            StatusEvent::Call(e) => format!(
                "call:{}:{}:{}",
                e.call_id,
                e.status.as_str(),
                e.sequence
                    .map_or_else(|| "-".to_string(), |s| s.to_string())
            ),
            StatusEvent::Recording(e) => {
                format!("recording:{}:{}", e.recording_id, e.status.as_str())
            }
            StatusEvent::Stream(e) => format!("stream:{}:{}", e.stream_id, e.status.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranks_order_the_lifecycle() {
        use CallStatus::*;
        let order = [Queued, Initiated, Ringing, InProgress, Completed];
        for w in order.windows(2) {
            assert!(w[0].progress_rank() < w[1].progress_rank());
        }
        for s in [Completed, Busy, Failed, NoAnswer, Canceled] {
            assert!(s.is_terminal());
        }
        for s in [Queued, Initiated, Ringing, InProgress] {
            assert!(!s.is_terminal());
        }
    }

    #[test]
    fn party_debug_hides_numbers_and_names() {
        let p = Party::from_provider("+14155552671");
        assert_eq!(p.phone().unwrap().as_str(), "+14155552671");
        assert!(!format!("{p:?}").contains("5552671"));
        let c = Party::from_provider("client:alice");
        assert_eq!(c, Party::Other("client:alice".into()));
        assert!(!format!("{c:?}").contains("alice"));
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"+14155552671\"");
    }

    #[tokio::test]
    async fn into_bytes_enforces_the_limit() {
        let chunks = || {
            futures::stream::iter(vec![
                Ok(Bytes::from_static(b"RIFF")),
                Ok(Bytes::from_static(b"WAVE")),
            ])
        };
        let dl = RecordingDownload {
            content_type: None,
            content_length: None,
            body: Box::pin(chunks()),
        };
        assert_eq!(dl.into_bytes(8).await.unwrap(), b"RIFFWAVE");
        let dl = RecordingDownload {
            content_type: None,
            content_length: None,
            body: Box::pin(chunks()),
        };
        assert!(matches!(
            dl.into_bytes(7).await,
            Err(ProviderError::TooLarge { limit: 7 })
        ));
        let dl = RecordingDownload {
            content_type: None,
            content_length: Some(100),
            body: Box::pin(futures::stream::empty()),
        };
        assert!(matches!(
            dl.into_bytes(99).await,
            Err(ProviderError::TooLarge { .. })
        ));
    }
}
