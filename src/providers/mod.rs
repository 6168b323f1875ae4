//! Telephony provider adapters: wire frames in, media inputs out; and the
//! control plane's view of a provider ([`TelephonyProvider`]). No routes here.
//!
//! The trait is object-safe (`Arc<dyn TelephonyProvider>` in the app state)
//! and stateless per tenant: every call that reaches the provider takes the
//! tenant's [`Credentials`], so one client (one connection pool) serves all
//! tenants.
pub mod config;
pub mod error;
pub mod model;
pub mod twilio;

pub use error::ProviderError;
pub use model::*;

use crate::secret::Secret;

/// What the product asks of a telephony provider.
///
/// Network methods fail with [`ProviderError`], whose
/// [`is_retryable`](ProviderError::is_retryable) separates "try again later"
/// from "this request is wrong". Webhook methods are pure: the caller reads
/// the body (capped), finds the tenant by [`webhook_account_id`], checks the
/// signature with that tenant's token, and only then parses.
///
/// [`webhook_account_id`]: TelephonyProvider::webhook_account_id
#[async_trait::async_trait]
pub trait TelephonyProvider: Send + Sync {
    /// Short stable name stored with calls and numbers (`"twilio"`).
    fn name(&self) -> &'static str;

    /// Numbers the tenant could buy.
    async fn search_numbers(
        &self,
        creds: &Credentials,
        search: &NumberSearch,
    ) -> Result<Vec<AvailableNumber>, ProviderError>;

    /// Buys a number and points its inbound calls at us.
    async fn provision_number(
        &self,
        creds: &Credentials,
        request: &ProvisionRequest,
    ) -> Result<ProvisionedNumber, ProviderError>;

    /// Gives a number back (by [`ProvisionedNumber::provider_id`]).
    async fn release_number(
        &self,
        creds: &Credentials,
        provider_id: &str,
    ) -> Result<(), ProviderError>;

    /// Places an outbound call.
    async fn create_call(
        &self,
        creds: &Credentials,
        call: &OutboundCall,
    ) -> Result<CallInfo, ProviderError>;

    /// Looks a call up; `None` when the provider has no such call on this
    /// account. How a stream for a call we were never told about is
    /// checked before it may create one.
    async fn fetch_call(
        &self,
        creds: &Credentials,
        call_id: &str,
    ) -> Result<Option<CallInfo>, ProviderError>;

    /// Ends a call, whatever its state.
    async fn hang_up(&self, creds: &Credentials, call_id: &str) -> Result<CallInfo, ProviderError>;

    /// Replaces what a live call is doing with new instructions.
    async fn redirect_call(
        &self,
        creds: &Credentials,
        call_id: &str,
        instructions: &CallInstructions,
    ) -> Result<CallInfo, ProviderError>;

    /// Moves a live call's other party to a new number.
    async fn transfer_call(
        &self,
        creds: &Credentials,
        call_id: &str,
        target: &TransferTarget,
    ) -> Result<CallInfo, ProviderError>;

    /// Holds/unholds or mutes/unmutes a call's leg in a conference.
    async fn update_participant(
        &self,
        creds: &Credentials,
        leg: &ConferenceLeg,
        update: &ParticipantUpdate,
    ) -> Result<ParticipantState, ProviderError>;

    /// Starts downloading a recording's audio (WAV).
    async fn fetch_recording(
        &self,
        creds: &Credentials,
        recording: &RecordingLocator,
        options: RecordingFetch,
    ) -> Result<RecordingDownload, ProviderError>;

    /// The account a webhook claims to come from, to find the tenant whose
    /// token verifies it. Untrusted until [`verify_webhook`] passes.
    ///
    /// [`verify_webhook`]: TelephonyProvider::verify_webhook
    fn webhook_account_id(&self, request: &WebhookRequest) -> Result<String, WebhookError>;

    /// Checks a webhook's signature with the tenant's auth token.
    fn verify_webhook(
        &self,
        auth_token: &Secret,
        request: &WebhookRequest,
    ) -> Result<(), WebhookError>;

    /// Reads a (verified) voice webhook: an inbound call asking what to do.
    fn parse_inbound_call(&self, request: &WebhookRequest) -> Result<InboundCall, WebhookError>;

    /// Reads a (verified) status callback: call, recording or stream.
    fn parse_status_callback(&self, request: &WebhookRequest) -> Result<StatusEvent, WebhookError>;

    /// The document that answers a call by streaming it to us.
    fn answer_document(&self, answer: &StreamAnswer) -> Result<AnswerDocument, ProviderError>;

    /// The document that turns a call away.
    fn reject_document(&self, rejection: &Rejection) -> AnswerDocument;
}
