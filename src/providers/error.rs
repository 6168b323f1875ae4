//! What can go wrong talking to a telephony provider, split the way callers
//! must act on it: retry later ([`ProviderError::is_retryable`]) or give up
//! and tell the user.

use std::time::Duration;

/// A failed provider request.
///
/// `Display` never includes the provider's free-text message (it can echo
/// phone numbers back); use [`ProviderError::user_message`] to show it to
/// the API client who sent the request.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No answer within the configured request timeout (or a download
    /// stalled longer than that between two chunks).
    #[error("telephony provider did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, DNS or TLS failure.
    #[error("could not reach the telephony provider: {0}")]
    Transport(String),
    /// The provider answered with an error status.
    #[error("telephony provider refused the request: HTTP {status}{}", code.map(|c| format!(", error {c}")).unwrap_or_default())]
    Api {
        /// HTTP status of the response.
        status: u16,
        /// Provider error code (Twilio: `code`, e.g. 21211 invalid `To`).
        code: Option<u32>,
        /// Provider's own message; may contain phone numbers.
        message: String,
        /// Link to the provider's documentation of `code`.
        more_info: Option<String>,
        /// `Retry-After` on 429/503, when given.
        retry_after: Option<Duration>,
    },
    /// A success status with a body we cannot read.
    #[error("telephony provider answered with an unexpected body: {0}")]
    Decode(String),
    /// We refused to send the request (bad argument, foreign recording URL).
    #[error("invalid provider request: {0}")]
    InvalidRequest(String),
    /// A download larger than the caller allowed.
    #[error("provider response exceeds {limit} bytes")]
    TooLarge { limit: u64 },
}

impl ProviderError {
    /// Whether the same request may succeed later: timeouts, transport
    /// failures, 5xx and 429. Other 4xx and our own refusals are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Timeout(_) | ProviderError::Transport(_) => true,
            ProviderError::Api { status, .. } => *status == 429 || *status >= 500,
            ProviderError::Decode(_)
            | ProviderError::InvalidRequest(_)
            | ProviderError::TooLarge { .. } => false,
        }
    }

    /// How long the provider asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The provider's HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The provider's error code, for API errors.
    pub fn code(&self) -> Option<u32> {
        match self {
            ProviderError::Api { code, .. } => *code,
            _ => None,
        }
    }

    /// A message for the API client who made the request: the provider's
    /// own wording for API errors, our description otherwise.
    pub fn user_message(&self) -> String {
        match self {
            ProviderError::Api { message, code, .. } if !message.is_empty() => match code {
                Some(code) => format!("{message} (provider error {code})"),
                None => message.clone(),
            },
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> ProviderError {
        ProviderError::Api {
            status,
            code: Some(21211),
            message: "The 'To' number +15005550001 is not a valid phone number.".into(),
            more_info: None,
            retry_after: None,
        }
    }

    #[test]
    fn retryable_split() {
        assert!(ProviderError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(ProviderError::Transport("reset".into()).is_retryable());
        assert!(api(429).is_retryable());
        assert!(api(500).is_retryable());
        assert!(api(503).is_retryable());
        assert!(!api(400).is_retryable());
        assert!(!api(401).is_retryable());
        assert!(!api(404).is_retryable());
        assert!(!ProviderError::Decode("x".into()).is_retryable());
        assert!(!ProviderError::InvalidRequest("x".into()).is_retryable());
    }

    #[test]
    fn display_keeps_numbers_out_user_message_has_them() {
        let e = api(400);
        let shown = e.to_string();
        assert!(!shown.contains("+1500"), "{shown}");
        assert!(shown.contains("21211") && shown.contains("400"), "{shown}");
        assert!(e.user_message().contains("not a valid phone number"));
        assert!(e.user_message().contains("21211"));
    }
}
