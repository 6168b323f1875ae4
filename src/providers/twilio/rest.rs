//! [`TwilioProvider`]: the [`TelephonyProvider`] over Twilio's REST API
//! (`/2010-04-01`), form-encoded requests, HTTP Basic auth with the tenant's
//! Account SID and auth token, JSON answers.
//!
//! Every request has a deadline (`request_timeout`): sending plus reading
//! the answer for API calls; the response head and then each body chunk for
//! recording downloads (long recordings take longer than one API call, but
//! must not stall). Twilio's error JSON (`code`, `message`, `more_info`,
//! `status`) becomes [`ProviderError::Api`]. SIDs are checked before they go
//! into a URL path, so a bad id cannot reach another resource.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use super::twiml;
use super::webhook::{self, is_sid};
use crate::phone::E164;
use crate::providers::model::*;
use crate::providers::{ProviderError, TelephonyProvider};
use crate::secret::Secret;

/// Twilio's production API.
pub const DEFAULT_API_BASE_URL: &str = "https://api.twilio.com";
/// API version prefix of every path.
pub const API_VERSION: &str = "2010-04-01";
/// Largest JSON answer read (Twilio's are a few KiB).
const MAX_JSON_BYTES: usize = 1024 * 1024;
/// Most numbers one search returns.
pub const MAX_SEARCH_RESULTS: u32 = 50;

/// Twilio over HTTP. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct TwilioProvider {
    http: reqwest::Client,
    api_base: Url,
    timeout: Duration,
}

impl std::fmt::Debug for TwilioProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioProvider")
            .field("api_base", &self.api_base.as_str())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl TwilioProvider {
    /// A client for the API at `api_base_url` (normally
    /// [`DEFAULT_API_BASE_URL`]; a local server in tests).
    pub fn new(api_base_url: Url, request_timeout: Duration) -> Result<Self, ProviderError> {
        if !matches!(api_base_url.scheme(), "http" | "https") || api_base_url.host().is_none() {
            return Err(ProviderError::InvalidRequest(
                "Twilio API base URL must be http(s)://host".into(),
            ));
        }
        if request_timeout.is_zero() {
            return Err(ProviderError::InvalidRequest(
                "request timeout must be positive".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("callstream/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(request_timeout)
            // Look-ups of unannounced calls come in bursts: keep a few
            // connections warm, not one per concurrent stream.
            .pool_max_idle_per_host(8)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ProviderError::Transport(error_chain(&e)))?;
        Ok(Self {
            http,
            api_base: api_base_url,
            timeout: request_timeout,
        })
    }

    pub fn api_base_url(&self) -> &Url {
        &self.api_base
    }

    /// `{base}/2010-04-01/Accounts/{AccountSid}/{tail}`.
    fn account_url(&self, creds: &Credentials, tail: &str) -> Result<Url, ProviderError> {
        if !is_sid(&creds.account_id, "AC") {
            return Err(ProviderError::InvalidRequest(
                "Twilio Account SID must be AC followed by 32 hex digits".into(),
            ));
        }
        let base = self.api_base.as_str().trim_end_matches('/');
        Url::parse(&format!(
            "{base}/{API_VERSION}/Accounts/{}/{tail}",
            creds.account_id
        ))
        .map_err(|e| ProviderError::InvalidRequest(format!("bad API URL: {e}")))
    }

    /// Sends one API request and decodes its JSON answer, all within the
    /// request timeout.
    async fn call_json<T: DeserializeOwned>(
        &self,
        creds: &Credentials,
        method: Method,
        url: Url,
        form: &[(&str, String)],
    ) -> Result<T, ProviderError> {
        let body = self.call(creds, method, url, form).await?;
        serde_json::from_slice(&body).map_err(|e| ProviderError::Decode(e.to_string()))
    }

    async fn call(
        &self,
        creds: &Credentials,
        method: Method,
        url: Url,
        form: &[(&str, String)],
    ) -> Result<Bytes, ProviderError> {
        let mut req = self
            .http
            .request(method, url)
            .basic_auth(&creds.account_id, Some(creds.auth_token.expose()))
            .header(reqwest::header::ACCEPT, "application/json");
        if !form.is_empty() {
            req = req.form(form);
        }
        let exchange = async {
            let resp = req.send().await.map_err(map_reqwest)?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = read_capped(resp, MAX_JSON_BYTES).await?;
            if status.is_success() {
                Ok(body)
            } else {
                Err(api_error(status, &headers, &body))
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ProviderError::Timeout(self.timeout))?
    }

    fn call_url(&self, creds: &Credentials, call_id: &str) -> Result<Url, ProviderError> {
        check_sid(call_id, "CA", "call id")?;
        self.account_url(creds, &format!("Calls/{call_id}.json"))
    }

    async fn update_call(
        &self,
        creds: &Credentials,
        call_id: &str,
        form: &[(&str, String)],
    ) -> Result<CallInfo, ProviderError> {
        let url = self.call_url(creds, call_id)?;
        let call: ApiCall = self.call_json(creds, Method::POST, url, form).await?;
        call.into_info()
    }

    /// The recording's media URL, checked to be ours: same origin as the
    /// configured API, the tenant's account, a recording SID. Credentials
    /// never go to any other URL.
    fn recording_url(
        &self,
        creds: &Credentials,
        recording: &RecordingLocator,
        options: RecordingFetch,
    ) -> Result<Url, ProviderError> {
        let recording_id = match recording {
            RecordingLocator::Id(id) => id.clone(),
            RecordingLocator::Url(raw) => {
                let given = Url::parse(raw).map_err(|_| foreign_recording())?;
                if given.origin() != self.api_base.origin()
                    || given.query().is_some()
                    || given.fragment().is_some()
                {
                    return Err(foreign_recording());
                }
                let expected_prefix = self.account_url(creds, "Recordings/")?;
                let tail = given
                    .path()
                    .strip_prefix(expected_prefix.path())
                    .ok_or_else(foreign_recording)?;
                let id = tail
                    .strip_suffix(".wav")
                    .or_else(|| tail.strip_suffix(".mp3"))
                    .unwrap_or(tail);
                id.to_string()
            }
        };
        check_sid(&recording_id, "RE", "recording id")?;
        let mut url = self.account_url(creds, &format!("Recordings/{recording_id}.wav"))?;
        if options.dual_channel {
            url.query_pairs_mut().append_pair("RequestedChannels", "2");
        }
        Ok(url)
    }
}

fn foreign_recording() -> ProviderError {
    ProviderError::InvalidRequest(
        "recording URL is not a recording of this account on the configured Twilio API".into(),
    )
}

fn check_sid(v: &str, prefix: &str, what: &str) -> Result<(), ProviderError> {
    if is_sid(v, prefix) {
        Ok(())
    } else {
        Err(ProviderError::InvalidRequest(format!(
            "{what} must be {prefix} followed by 32 hex digits"
        )))
    }
}

/// A reqwest failure as a typed error, with its causes (reqwest's own
/// message is often just "error sending request"); never the URL.
fn map_reqwest(e: reqwest::Error) -> ProviderError {
    let e = e.without_url();
    if e.is_timeout() {
        // Only the connect timeout is set on the client; treat it alike.
        ProviderError::Transport(format!("connect timed out: {}", error_chain(&e)))
    } else if e.is_decode() {
        ProviderError::Decode(error_chain(&e))
    } else {
        ProviderError::Transport(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

async fn read_capped(resp: reqwest::Response, limit: usize) -> Result<Bytes, ProviderError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ProviderError::TooLarge {
            limit: limit as u64,
        });
    }
    let mut stream = resp.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(map_reqwest)?;
        if out.len() + chunk.len() > limit {
            return Err(ProviderError::TooLarge {
                limit: limit as u64,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Twilio's error body, all fields optional (proxies answer with HTML).
#[derive(Deserialize)]
struct ApiErrorBody {
    code: Option<u32>,
    message: Option<String>,
    more_info: Option<String>,
}

fn api_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let parsed: Option<ApiErrorBody> = serde_json::from_slice(body).ok();
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let (code, message, more_info) = match parsed {
        Some(b) => (b.code, b.message.unwrap_or_default(), b.more_info),
        None => (
            None,
            status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_string(),
            None,
        ),
    };
    ProviderError::Api {
        status: status.as_u16(),
        code,
        message,
        more_info,
        retry_after,
    }
}

// ------------------------------------------------------------ API shapes

#[derive(Deserialize)]
struct ApiCall {
    sid: String,
    status: String,
    direction: Option<String>,
    from: Option<String>,
    to: Option<String>,
    parent_call_sid: Option<String>,
}

impl ApiCall {
    fn into_info(self) -> Result<CallInfo, ProviderError> {
        let status = match self.status.as_str() {
            "queued" => CallStatus::Queued,
            "initiated" => CallStatus::Initiated,
            "ringing" => CallStatus::Ringing,
            "in-progress" => CallStatus::InProgress,
            "completed" => CallStatus::Completed,
            "busy" => CallStatus::Busy,
            "failed" => CallStatus::Failed,
            "no-answer" => CallStatus::NoAnswer,
            "canceled" => CallStatus::Canceled,
            _ => return Err(ProviderError::Decode("unknown call status".into())),
        };
        Ok(CallInfo {
            call_id: self.sid,
            status,
            direction: self.direction.as_deref().and_then(webhook::direction),
            from: nonempty(self.from).map(|s| webhook::party(&s)),
            to: nonempty(self.to).map(|s| webhook::party(&s)),
            parent_call_id: nonempty(self.parent_call_sid),
        })
    }
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Twilio spells the keys `voice`/`sms`/`mms`, in older answers `SMS`/`MMS`.
#[derive(Deserialize, Default)]
struct ApiCapabilities {
    #[serde(default, alias = "Voice")]
    voice: Option<bool>,
    #[serde(default, alias = "SMS")]
    sms: Option<bool>,
    #[serde(default, alias = "MMS")]
    mms: Option<bool>,
}

impl From<Option<ApiCapabilities>> for Capabilities {
    fn from(c: Option<ApiCapabilities>) -> Self {
        let c = c.unwrap_or_default();
        Capabilities {
            voice: c.voice.unwrap_or(false),
            sms: c.sms.unwrap_or(false),
            mms: c.mms.unwrap_or(false),
        }
    }
}

#[derive(Deserialize)]
struct ApiIncomingNumber {
    sid: String,
    phone_number: String,
    friendly_name: Option<String>,
    capabilities: Option<ApiCapabilities>,
}

#[derive(Deserialize)]
struct ApiAvailableNumbers {
    available_phone_numbers: Vec<ApiAvailableNumber>,
}

#[derive(Deserialize)]
struct ApiAvailableNumber {
    phone_number: String,
    friendly_name: Option<String>,
    locality: Option<String>,
    region: Option<String>,
    iso_country: Option<String>,
    capabilities: Option<ApiCapabilities>,
}

#[derive(Deserialize)]
struct ApiParticipant {
    call_sid: String,
    conference_sid: String,
    #[serde(default)]
    hold: bool,
    #[serde(default)]
    muted: bool,
}

fn bool_param(b: bool) -> String {
    if b { "true" } else { "false" }.to_string()
}

fn event_name(e: CallProgressEvent) -> &'static str {
    match e {
        CallProgressEvent::Initiated => "initiated",
        CallProgressEvent::Ringing => "ringing",
        CallProgressEvent::Answered => "answered",
        CallProgressEvent::Completed => "completed",
    }
}

fn instructions_params(form: &mut Vec<(&'static str, String)>, i: &CallInstructions) {
    match i {
        CallInstructions::Url(url) => {
            form.push(("Url", url.to_string()));
            form.push(("Method", "POST".into()));
        }
        CallInstructions::Document(doc) => form.push(("Twiml", doc.clone())),
    }
}

#[async_trait::async_trait]
impl TelephonyProvider for TwilioProvider {
    fn name(&self) -> &'static str {
        "twilio"
    }

    async fn search_numbers(
        &self,
        creds: &Credentials,
        search: &NumberSearch,
    ) -> Result<Vec<AvailableNumber>, ProviderError> {
        let country = search.country.trim();
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ProviderError::InvalidRequest(
                "country must be an ISO 3166-1 alpha-2 code such as US".into(),
            ));
        }
        if search.limit == 0 || search.limit > MAX_SEARCH_RESULTS {
            return Err(ProviderError::InvalidRequest(format!(
                "limit must be between 1 and {MAX_SEARCH_RESULTS}"
            )));
        }
        let kind = match search.kind {
            NumberKind::Local => "Local",
            NumberKind::TollFree => "TollFree",
            NumberKind::Mobile => "Mobile",
        };
        let mut url = self.account_url(
            creds,
            &format!(
                "AvailablePhoneNumbers/{}/{kind}.json",
                country.to_ascii_uppercase()
            ),
        )?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(area) = &search.area_code {
                if area.len() != 3 || !area.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProviderError::InvalidRequest(
                        "area code must be 3 digits".into(),
                    ));
                }
                q.append_pair("AreaCode", area);
            }
            if let Some(contains) = &search.contains {
                if contains.is_empty()
                    || contains.len() > 16
                    || !contains
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'*')
                {
                    return Err(ProviderError::InvalidRequest(
                        "contains must be 1–16 digits, letters or *".into(),
                    ));
                }
                q.append_pair("Contains", contains);
            }
            q.append_pair("VoiceEnabled", "true");
            q.append_pair("PageSize", &search.limit.to_string());
        }
        let list: ApiAvailableNumbers = self.call_json(creds, Method::GET, url, &[]).await?;
        Ok(list
            .available_phone_numbers
            .into_iter()
            // A number we could not store or dial is not worth offering.
            .filter_map(|n| {
                Some(AvailableNumber {
                    number: E164::parse(&n.phone_number).ok()?,
                    friendly_name: nonempty(n.friendly_name),
                    locality: nonempty(n.locality),
                    region: nonempty(n.region),
                    iso_country: nonempty(n.iso_country),
                    capabilities: n.capabilities.into(),
                })
            })
            .take(search.limit as usize)
            .collect())
    }

    async fn provision_number(
        &self,
        creds: &Credentials,
        request: &ProvisionRequest,
    ) -> Result<ProvisionedNumber, ProviderError> {
        let mut form = vec![
            ("PhoneNumber", request.number.to_string()),
            ("VoiceUrl", request.voice_url.to_string()),
            ("VoiceMethod", "POST".to_string()),
        ];
        if let Some(cb) = &request.status_callback {
            form.push(("StatusCallback", cb.to_string()));
            form.push(("StatusCallbackMethod", "POST".into()));
        }
        if let Some(name) = &request.friendly_name {
            if name.chars().count() > 64 {
                return Err(ProviderError::InvalidRequest(
                    "friendly name must be at most 64 characters".into(),
                ));
            }
            form.push(("FriendlyName", name.clone()));
        }
        let url = self.account_url(creds, "IncomingPhoneNumbers.json")?;
        let n: ApiIncomingNumber = self.call_json(creds, Method::POST, url, &form).await?;
        Ok(ProvisionedNumber {
            number: E164::parse(&n.phone_number)
                .map_err(|_| ProviderError::Decode("phone_number is not E.164".into()))?,
            provider_id: n.sid,
            friendly_name: nonempty(n.friendly_name),
            capabilities: n.capabilities.into(),
        })
    }

    async fn release_number(
        &self,
        creds: &Credentials,
        provider_id: &str,
    ) -> Result<(), ProviderError> {
        check_sid(provider_id, "PN", "phone number id")?;
        let url = self.account_url(creds, &format!("IncomingPhoneNumbers/{provider_id}.json"))?;
        self.call(creds, Method::DELETE, url, &[]).await?;
        Ok(())
    }

    async fn create_call(
        &self,
        creds: &Credentials,
        call: &OutboundCall,
    ) -> Result<CallInfo, ProviderError> {
        let mut form = vec![("To", call.to.to_string()), ("From", call.from.to_string())];
        instructions_params(&mut form, &call.on_answer);
        form.push(("StatusCallback", call.status_callback.to_string()));
        form.push(("StatusCallbackMethod", "POST".into()));
        for event in &call.status_events {
            form.push(("StatusCallbackEvent", event_name(*event).into()));
        }
        if let Some(t) = call.ring_timeout_secs {
            if !(5..=600).contains(&t) {
                return Err(ProviderError::InvalidRequest(
                    "ring timeout must be between 5 and 600 seconds".into(),
                ));
            }
            form.push(("Timeout", t.to_string()));
        }
        if let Some(rec) = &call.record {
            form.push(("Record", "true".into()));
            form.push((
                "RecordingChannels",
                if rec.dual_channel { "dual" } else { "mono" }.into(),
            ));
            form.push(("RecordingStatusCallback", rec.status_callback.to_string()));
            form.push(("RecordingStatusCallbackMethod", "POST".into()));
            form.push(("RecordingStatusCallbackEvent", "completed".into()));
            form.push(("RecordingStatusCallbackEvent", "absent".into()));
        }
        let url = self.account_url(creds, "Calls.json")?;
        let created: ApiCall = self.call_json(creds, Method::POST, url, &form).await?;
        created.into_info()
    }

    async fn fetch_call(
        &self,
        creds: &Credentials,
        call_id: &str,
    ) -> Result<Option<CallInfo>, ProviderError> {
        let url = self.call_url(creds, call_id)?;
        match self
            .call_json::<ApiCall>(creds, Method::GET, url, &[])
            .await
        {
            Ok(call) => call.into_info().map(Some),
            Err(ProviderError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn hang_up(&self, creds: &Credentials, call_id: &str) -> Result<CallInfo, ProviderError> {
        self.update_call(creds, call_id, &[("Status", "completed".into())])
            .await
    }

    async fn redirect_call(
        &self,
        creds: &Credentials,
        call_id: &str,
        instructions: &CallInstructions,
    ) -> Result<CallInfo, ProviderError> {
        let mut form = Vec::new();
        instructions_params(&mut form, instructions);
        self.update_call(creds, call_id, &form).await
    }

    async fn transfer_call(
        &self,
        creds: &Credentials,
        call_id: &str,
        target: &TransferTarget,
    ) -> Result<CallInfo, ProviderError> {
        if let Some(t) = target.ring_timeout_secs {
            if !(5..=600).contains(&t) {
                return Err(ProviderError::InvalidRequest(
                    "ring timeout must be between 5 and 600 seconds".into(),
                ));
            }
        }
        let doc = twiml::transfer(target)?;
        self.update_call(creds, call_id, &[("Twiml", doc)]).await
    }

    async fn update_participant(
        &self,
        creds: &Credentials,
        leg: &ConferenceLeg,
        update: &ParticipantUpdate,
    ) -> Result<ParticipantState, ProviderError> {
        check_sid(&leg.conference_id, "CF", "conference id")?;
        check_sid(&leg.call_id, "CA", "call id")?;
        let mut form = Vec::new();
        if let Some(hold) = update.hold {
            form.push(("Hold", bool_param(hold)));
            if let (true, Some(music)) = (hold, &update.hold_music) {
                form.push(("HoldUrl", music.to_string()));
            }
        }
        if let Some(muted) = update.muted {
            form.push(("Muted", bool_param(muted)));
        }
        if form.is_empty() {
            return Err(ProviderError::InvalidRequest(
                "participant update changes nothing".into(),
            ));
        }
        let url = self.account_url(
            creds,
            &format!(
                "Conferences/{}/Participants/{}.json",
                leg.conference_id, leg.call_id
            ),
        )?;
        let p: ApiParticipant = self.call_json(creds, Method::POST, url, &form).await?;
        Ok(ParticipantState {
            conference_id: p.conference_sid,
            call_id: p.call_sid,
            hold: p.hold,
            muted: p.muted,
        })
    }

    async fn fetch_recording(
        &self,
        creds: &Credentials,
        recording: &RecordingLocator,
        options: RecordingFetch,
    ) -> Result<RecordingDownload, ProviderError> {
        let url = self.recording_url(creds, recording, options)?;
        let req = self
            .http
            .get(url)
            .basic_auth(&creds.account_id, Some(creds.auth_token.expose()));
        let timeout = self.timeout;
        let resp = tokio::time::timeout(timeout, req.send())
            .await
            .map_err(|_| ProviderError::Timeout(timeout))?
            .map_err(map_reqwest)?;
        let status = resp.status();
        if !status.is_success() {
            let headers = resp.headers().clone();
            let body = tokio::time::timeout(timeout, read_capped(resp, MAX_JSON_BYTES))
                .await
                .map_err(|_| ProviderError::Timeout(timeout))??;
            return Err(api_error(status, &headers, &body));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_length = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        // Each chunk must arrive within the timeout; the stream ends after
        // the first error.
        let chunks = resp.bytes_stream();
        let body = futures::stream::unfold(Some(chunks), move |state| async move {
            let mut chunks = state?;
            match tokio::time::timeout(timeout, chunks.next()).await {
                Err(_) => Some((Err(ProviderError::Timeout(timeout)), None)),
                Ok(None) => None,
                Ok(Some(Err(e))) => Some((Err(map_reqwest(e)), None)),
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), Some(chunks))),
            }
        });
        Ok(RecordingDownload {
            content_type,
            content_length,
            body: Box::pin(body),
        })
    }

    fn webhook_account_id(&self, request: &WebhookRequest) -> Result<String, WebhookError> {
        webhook::account_id(request)
    }

    fn verify_webhook(
        &self,
        auth_token: &Secret,
        request: &WebhookRequest,
    ) -> Result<(), WebhookError> {
        webhook::verify(auth_token, request)
    }

    fn parse_inbound_call(&self, request: &WebhookRequest) -> Result<InboundCall, WebhookError> {
        webhook::parse_inbound_call(request)
    }

    fn parse_status_callback(&self, request: &WebhookRequest) -> Result<StatusEvent, WebhookError> {
        webhook::parse_status_callback(request)
    }

    fn answer_document(&self, answer: &StreamAnswer) -> Result<AnswerDocument, ProviderError> {
        Ok(AnswerDocument {
            content_type: twiml::CONTENT_TYPE,
            body: twiml::answer(answer)?,
        })
    }

    fn reject_document(&self, rejection: &Rejection) -> AnswerDocument {
        AnswerDocument {
            content_type: twiml::CONTENT_TYPE,
            body: twiml::reject(rejection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const RE: &str = "REcccccccccccccccccccccccccccccccc";

    fn provider(base: &str) -> TwilioProvider {
        TwilioProvider::new(Url::parse(base).unwrap(), Duration::from_secs(5)).unwrap()
    }

    fn creds() -> Credentials {
        Credentials::new(ACCOUNT, Secret::new("token"))
    }

    #[test]
    fn recording_urls_must_be_ours() {
        let p = provider("https://api.twilio.com");
        let ours = format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RE}");
        let want = format!("{ours}.wav");
        for given in [ours.clone(), format!("{ours}.wav"), format!("{ours}.mp3")] {
            let url = p
                .recording_url(
                    &creds(),
                    &RecordingLocator::Url(given),
                    RecordingFetch::default(),
                )
                .unwrap();
            assert_eq!(url.as_str(), want);
        }
        let dual = p
            .recording_url(
                &creds(),
                &RecordingLocator::Id(RE.into()),
                RecordingFetch { dual_channel: true },
            )
            .unwrap();
        assert_eq!(dual.as_str(), format!("{want}?RequestedChannels=2"));

        let other_account = ours.replace(ACCOUNT, "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
        for foreign in [
            format!("https://evil.example.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RE}"),
            format!("http://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RE}"),
            format!("https://api.twilio.com:8443/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RE}"),
            other_account,
            format!("{ours}/../../Calls"),
            format!("{ours}?x=1"),
            format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Calls/{RE}"),
            "not a url".to_string(),
        ] {
            assert!(
                matches!(
                    p.recording_url(
                        &creds(),
                        &RecordingLocator::Url(foreign.clone()),
                        RecordingFetch::default()
                    ),
                    Err(ProviderError::InvalidRequest(_))
                ),
                "{foreign}"
            );
        }
        assert!(p
            .recording_url(
                &creds(),
                &RecordingLocator::Id("RE123".into()),
                RecordingFetch::default()
            )
            .is_err());
    }

    #[test]
    fn base_url_with_a_path_prefix() {
        let p = provider("http://127.0.0.1:9/twilio/");
        let url = p.account_url(&creds(), "Calls.json").unwrap();
        assert_eq!(
            url.as_str(),
            format!("http://127.0.0.1:9/twilio/2010-04-01/Accounts/{ACCOUNT}/Calls.json")
        );
        let bad = Credentials::new("AC../x", Secret::new("t"));
        assert!(p.account_url(&bad, "Calls.json").is_err());
    }

    #[test]
    fn constructor_refuses_bad_settings() {
        assert!(
            TwilioProvider::new(Url::parse("ftp://x").unwrap(), Duration::from_secs(1)).is_err()
        );
        assert!(TwilioProvider::new(Url::parse("https://x").unwrap(), Duration::ZERO).is_err());
        let dbg = format!("{:?}", provider("https://api.twilio.com"));
        assert!(dbg.contains("api.twilio.com"));
    }
}
