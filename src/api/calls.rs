//! Calls: list (filtered, paged), detail (logs, transcript, recording,
//! customer, ticket), outbound calls through the provider, record edits and
//! live controls (hold, mute, transfer, hang up), call → ticket.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};

use super::auth::Auth;
use super::error::{ApiJson, ApiQuery};
use super::rbac::Permission;
use super::{AppError, AppState};
use crate::phone::E164;
use crate::providers::{
    Announcement, CallInstructions, CallProgressEvent, ConferenceLeg, OutboundCall,
    ParticipantUpdate, StreamAnswer, StreamMode, TransferTarget,
};
use crate::store::{
    now_ms, Call, CallFilter, CallLog, CallPage, CallPolicy, CallRecordUpdate, CallStatus,
    Customer, Direction, NewTicket, OutboundCallRow, Recording, StoreError, Ticket, TicketStatus,
    Transcript,
};

/// Where the provider posts call status callbacks, under our public URL.
pub const STATUS_CALLBACK_PATH: &str = "/v1/providers/twilio/status";
/// Our media stream endpoint.
const STREAM_PATH: &str = "/v1/providers/twilio/stream";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1–500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    status: Option<CallStatus>,
    direction: Option<Direction>,
    /// Caller or callee; normalised to E.164 before matching.
    number: Option<String>,
    /// Created at or after: RFC 3339 or milliseconds since the epoch.
    from: Option<String>,
    /// Created before: RFC 3339 or milliseconds since the epoch.
    to: Option<String>,
}

/// Parses a time bound given as epoch milliseconds or RFC 3339.
fn time_bound(name: &str, raw: &str) -> Result<i64, AppError> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            AppError::BadRequest(format!(
                "{name} must be RFC 3339 (2025-01-31T12:00:00Z) or milliseconds since the epoch"
            ))
        })
}

/// A phone number from the client, normalised (no default country: the
/// number must carry its country code, `+` or `00`).
fn e164(field: &str, raw: &str) -> Result<E164, AppError> {
    E164::normalize(raw, None)
        .map_err(|e| AppError::BadRequest(format!("{field} is not a valid E.164 number: {e}")))
}

pub async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<CallPage>, AppError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(AppError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    let filter = CallFilter {
        status: params.status,
        direction: params.direction,
        number: params
            .number
            .as_deref()
            .map(|n| e164("number", n).map(E164::into_string))
            .transpose()?,
        created_from: params
            .from
            .as_deref()
            .map(|t| time_bound("from", t))
            .transpose()?,
        created_to: params
            .to
            .as_deref()
            .map(|t| time_bound("to", t))
            .transpose()?,
    };
    let page = state
        .store
        .list_calls_filtered(&who.tenant_id, &filter, limit, params.cursor.as_deref())
        .await?;
    Ok(Json(page))
}

#[derive(Debug, Serialize)]
pub struct CallDetail {
    #[serde(flatten)]
    call: Call,
    logs: Vec<CallLog>,
    /// The call's transcript status and, once the call has ended, its summary.
    transcript: Option<Transcript>,
    /// Where the transcript is read, when the call has one.
    transcript_url: Option<String>,
    /// The call's recording (`recording_id`): status, duration, size.
    recording: Option<Recording>,
    /// The linked customer, or the one whose number matches the call's
    /// other party.
    customer: Option<Customer>,
    ticket: Option<Ticket>,
}

async fn detail(state: &AppState, tenant_id: &str, call: Call) -> Result<CallDetail, AppError> {
    let store = &state.store;
    let logs = store.list_call_logs(tenant_id, &call.id).await?;
    let transcript = match &call.transcript_id {
        Some(t) => Some(store.get_transcript(tenant_id, t).await?),
        None => None,
    };
    let customer = match &call.customer_id {
        Some(c) => optional(store.get_customer(tenant_id, c).await)?,
        None => store.customer_for_call(&call).await?,
    };
    let ticket = match &call.ticket_id {
        Some(t) => optional(store.get_ticket(tenant_id, t).await)?,
        None => None,
    };
    Ok(CallDetail {
        transcript_url: transcript_url(&call),
        recording: match &call.recording_id {
            Some(r) => optional(store.get_recording(tenant_id, r).await)?,
            None => None,
        },
        call,
        logs,
        transcript,
        customer,
        ticket,
    })
}

fn optional<T>(r: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

fn transcript_url(call: &Call) -> Option<String> {
    call.transcript_id
        .as_ref()
        .map(|_| format!("/v1/calls/{}/transcript", call.id))
}

pub async fn get(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<CallDetail>, AppError> {
    let call = state.store.get_call(&who.tenant_id, &id).await?;
    Ok(Json(detail(&state, &who.tenant_id, call).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCall {
    /// Who to call, E.164 (`+` or `00` and the country code; separators ok).
    to: String,
    /// Caller id: one of the tenant's numbers (its first by default). Only
    /// a tenant without numbers here must name one (Twilio checks it).
    from: Option<String>,
    /// Seconds to ring, 5–600.
    ring_timeout_secs: Option<u32>,
}

/// Places an outbound call. The row is written only after the provider
/// accepted the call, so a refused or timed-out request leaves nothing.
pub async fn create(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiJson(req): ApiJson<CreateCall>,
) -> Result<(StatusCode, Json<CallDetail>), AppError> {
    let tenant = &who.tenant_id;
    let to = e164("to", &req.to)?;
    if let Some(t) = req.ring_timeout_secs {
        if !(5..=600).contains(&t) {
            return Err(AppError::BadRequest(
                "ring_timeout_secs must be between 5 and 600".into(),
            ));
        }
    }
    let ours = state.store.tenant_caller_ids(tenant).await?;
    let from = match (&req.from, ours.first()) {
        (Some(f), _) => {
            let f = e164("from", f)?;
            if !ours.is_empty() && !ours.iter().any(|n| n == f.as_str()) {
                return Err(AppError::BadRequest(
                    "from must be one of the tenant's phone numbers".into(),
                ));
            }
            f
        }
        (None, Some(first)) => E164::parse(first)
            .map_err(|_| AppError::Internal("stored phone number is not E.164".into()))?,
        (None, None) => {
            return Err(AppError::BadRequest(
                "from is required: the tenant has no phone numbers to call from".into(),
            ))
        }
    };
    let creds = state.provider_credentials(tenant).await?;
    let settings = state.store.tenant_settings(tenant).await?;
    // The call starts here: its policy (and so the consent it announces).
    let policy = CallPolicy::from_settings(&settings, now_ms());

    let public = state.config.public_url();
    let status_callback = public
        .join(STATUS_CALLBACK_PATH)
        .map_err(|e| AppError::Internal(format!("status callback URL: {e}")))?;
    let mut stream_url = public
        .join(STREAM_PATH)
        .map_err(|e| AppError::Internal(format!("stream URL: {e}")))?;
    let ws = if stream_url.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    stream_url
        .set_scheme(ws)
        .map_err(|_| AppError::Internal("stream URL scheme".into()))?;
    // The stream's start carries who the call is with; the upgrade itself
    // is authenticated by Twilio's signature (no token: the CallSid it
    // would bind to is not known until the provider answers below).
    let answer = state.provider.answer_document(&StreamAnswer {
        announcement: policy.consent_announcement.clone().map(Announcement::text),
        stream_url,
        mode: StreamMode::Bidirectional,
        parameters: vec![
            ("direction".into(), "outbound".into()),
            ("from".into(), from.to_string()),
            ("to".into(), to.to_string()),
        ],
        status_callback: None,
        stream_name: None,
    })?;
    let info = state
        .provider
        .create_call(
            &creds,
            &OutboundCall {
                to: to.clone(),
                from: from.clone(),
                on_answer: CallInstructions::Document(answer.body),
                status_callback,
                status_events: CallProgressEvent::ALL.to_vec(),
                ring_timeout_secs: req.ring_timeout_secs,
                record: None,
            },
        )
        .await?;

    let customer = state
        .store
        .find_customer_by_number(tenant, to.as_str())
        .await?;
    let now = now_ms();
    let stored = state
        .store
        .create_outbound_call(
            tenant,
            &OutboundCallRow {
                provider: state.provider.name(),
                external_call_id: &info.call_id,
                from_number: from.as_str(),
                to_number: to.as_str(),
                customer_id: customer.as_ref().map(|c| c.id.as_str()),
                assigned_user_id: Some(&who.user_id),
            },
            now,
        )
        .await;
    let call = match stored {
        Ok(c) => c,
        Err(e) => {
            // The provider is dialling a call we could not record: stop it.
            if let Err(hangup) = state.provider.hang_up(&creds, &info.call_id).await {
                tracing::error!(error = %hangup, "could not hang up an unrecorded call");
            }
            return Err(e.into());
        }
    };
    let pinned = state
        .store
        .pin_call_policy(tenant, &call.id, &policy)
        .await?;
    let call = Call {
        policy: Some(pinned),
        ..call
    };
    state
        .store
        .append_call_log(
            tenant,
            &call.id,
            "outbound_created",
            &serde_json::json!({ "by": who.user_id, "provider_status": info.status.as_str() }),
            now,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(detail(&state, tenant, call).await?),
    ))
}

/// `Some(None)` for an explicit `null`, so a field can be cleared.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A live control, acting through the provider.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    Hold,
    Unhold,
    Mute,
    Unmute,
    HangUp,
    /// Moves the call's other party to `to` (E.164).
    Transfer {
        to: String,
    },
}

impl Control {
    fn name(&self) -> &'static str {
        match self {
            Control::Hold => "hold",
            Control::Unhold => "unhold",
            Control::Mute => "mute",
            Control::Unmute => "unmute",
            Control::HangUp => "hang_up",
            Control::Transfer { .. } => "transfer",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCall {
    #[serde(default, deserialize_with = "nullable")]
    disposition: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    notes: Option<Option<String>>,
    /// A user of the tenant.
    #[serde(default, deserialize_with = "nullable")]
    assigned_user_id: Option<Option<String>>,
    /// A ticket of the tenant.
    #[serde(default, deserialize_with = "nullable")]
    ticket_id: Option<Option<String>>,
    /// Needs `CALLS_CONTROL` besides the route's `CALLS_UPDATE`.
    control: Option<Control>,
}

const MAX_DISPOSITION: usize = 64;
const MAX_NOTES: usize = 10_000;

fn text_field(
    name: &str,
    v: Option<Option<String>>,
    max: usize,
) -> Result<Option<Option<String>>, AppError> {
    match v {
        Some(Some(s)) => {
            let s = s.trim().to_string();
            if s.is_empty() || s.chars().count() > max {
                return Err(AppError::BadRequest(format!(
                    "{name} must be 1–{max} characters (null clears it)"
                )));
            }
            Ok(Some(Some(s)))
        }
        other => Ok(other),
    }
}

/// Edits the call record and/or acts on the live call. Everything is
/// validated before the provider is asked; the record changes only after
/// the control (if any) succeeded.
pub async fn patch(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PatchCall>,
) -> Result<Json<CallDetail>, AppError> {
    let tenant = &who.tenant_id;
    let store = &state.store;
    let call = store.get_call(tenant, &id).await?;
    let update = CallRecordUpdate {
        disposition: text_field("disposition", req.disposition, MAX_DISPOSITION)?,
        notes: text_field("notes", req.notes, MAX_NOTES)?,
        assigned_user_id: req.assigned_user_id,
        ticket_id: req.ticket_id,
        ..Default::default()
    };
    if let Some(Some(user)) = &update.assigned_user_id {
        match optional(store.get_user(tenant, user).await)? {
            Some(u) if u.disabled_at.is_none() => {}
            _ => {
                return Err(AppError::BadRequest(
                    "assigned_user_id does not name an active user of this tenant".into(),
                ))
            }
        }
    }
    if let Some(Some(ticket)) = &update.ticket_id {
        if optional(store.get_ticket(tenant, ticket).await)?.is_none() {
            return Err(AppError::BadRequest(
                "ticket_id does not name a ticket of this tenant".into(),
            ));
        }
    }
    if let Some(control) = &req.control {
        if !Permission::CallsControl.granted_to(who.role) {
            return Err(AppError::MissingPermission {
                role: who.role,
                permission: Permission::CallsControl,
            });
        }
        control_call(&state, &who, &call, control).await?;
    }
    let call = if update.is_empty() {
        store.get_call(tenant, &id).await?
    } else {
        let fields: Vec<&str> = [
            ("disposition", update.disposition.is_some()),
            ("notes", update.notes.is_some()),
            ("assigned_user_id", update.assigned_user_id.is_some()),
            ("ticket_id", update.ticket_id.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        let now = now_ms();
        let call = store.update_call_record(tenant, &id, &update, now).await?;
        store
            .append_call_log(
                tenant,
                &id,
                "record_updated",
                &serde_json::json!({ "by": who.user_id, "fields": fields }),
                now,
            )
            .await?;
        call
    };
    Ok(Json(detail(&state, tenant, call).await?))
}

async fn control_call(
    state: &AppState,
    who: &crate::store::Principal,
    call: &Call,
    control: &Control,
) -> Result<(), AppError> {
    if call.status.is_terminal() {
        return Err(AppError::Conflict(format!(
            "the call has ended ({}); it cannot be controlled",
            call.status
        )));
    }
    // Validate before reaching the provider.
    let transfer_to = match control {
        Control::Transfer { to } => Some(e164("control.to", to)?),
        _ => None,
    };
    let participant = match control {
        Control::Hold => Some(ParticipantUpdate {
            hold: Some(true),
            ..Default::default()
        }),
        Control::Unhold => Some(ParticipantUpdate {
            hold: Some(false),
            ..Default::default()
        }),
        Control::Mute => Some(ParticipantUpdate {
            muted: Some(true),
            ..Default::default()
        }),
        Control::Unmute => Some(ParticipantUpdate {
            muted: Some(false),
            ..Default::default()
        }),
        Control::HangUp | Control::Transfer { .. } => None,
    };
    if participant.is_some() && call.conference_sid.is_none() {
        return Err(AppError::Conflict(
            "hold and mute act on a conference participant, and this call is not in a \
             conference (it is connected straight to the media stream); transfer and \
             hang_up still work"
                .into(),
        ));
    }
    let creds = state.provider_credentials(&call.tenant_id).await?;
    let mut detail = serde_json::json!({ "action": control.name(), "by": who.user_id });
    match (participant, transfer_to) {
        (Some(update), _) => {
            let leg = ConferenceLeg {
                conference_id: call.conference_sid.clone().unwrap_or_default(),
                call_id: call.external_call_id.clone(),
            };
            let p = state
                .provider
                .update_participant(&creds, &leg, &update)
                .await?;
            detail["hold"] = p.hold.into();
            detail["muted"] = p.muted.into();
        }
        (None, Some(to)) => {
            // Shown to the new party: our side of the call.
            let ours = match call.direction {
                Direction::Inbound => call.to_number.as_deref(),
                Direction::Outbound => call.from_number.as_deref(),
            };
            let info = state
                .provider
                .transfer_call(
                    &creds,
                    &call.external_call_id,
                    &TransferTarget {
                        to,
                        caller_id: ours.and_then(|n| E164::parse(n).ok()),
                        announcement: None,
                        ring_timeout_secs: None,
                    },
                )
                .await?;
            detail["provider_status"] = info.status.as_str().into();
        }
        (None, None) => {
            let info = state
                .provider
                .hang_up(&creds, &call.external_call_id)
                .await?;
            detail["provider_status"] = info.status.as_str().into();
            // The status callback will say the same; ending it now shows the
            // agent the result at once (a later callback finds it ended).
            if info.status.is_terminal() {
                let status = match info.status {
                    crate::providers::CallStatus::Canceled => CallStatus::Canceled,
                    _ => CallStatus::Completed,
                };
                state
                    .store
                    .end_call(&call.tenant_id, &call.id, status, now_ms())
                    .await?;
            }
        }
    }
    state
        .store
        .append_call_log(&call.tenant_id, &call.id, "control", &detail, now_ms())
        .await?;
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallTicket {
    subject: Option<String>,
    status: Option<TicketStatus>,
}

/// Turns a call into a ticket carrying its summary (as the description),
/// a link to its transcript, and its customer. A call has one ticket.
pub async fn to_ticket(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Ticket>), AppError> {
    let tenant = &who.tenant_id;
    let store = &state.store;
    let call = store.get_call(tenant, &id).await?;
    let req: CallTicket = if body.iter().all(u8::is_ascii_whitespace) {
        CallTicket::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| AppError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    if let Some(t) = &call.ticket_id {
        if optional(store.get_ticket(tenant, t).await)?.is_some() {
            return Err(AppError::Conflict(format!(
                "the call is already linked to ticket {t}"
            )));
        }
    }
    let customer = match &call.customer_id {
        Some(c) => optional(store.get_customer(tenant, c).await)?,
        None => store.customer_for_call(&call).await?,
    };
    let summary = match &call.transcript_id {
        Some(t) => store.get_transcript(tenant, t).await?.summary.map(|json| {
            // Plain text for the ticket; a summary of another shape as JSON.
            serde_json::from_value::<crate::transcript::summary::CallSummary>(json.clone())
                .map(|s| s.to_text())
                .unwrap_or_else(|_| json.to_string())
        }),
        None => None,
    };
    let subject = match req.subject {
        Some(s) => super::crm::subject(&s)?,
        None => {
            let (dir, other) = match call.direction {
                Direction::Inbound => ("Inbound call from", call.from_number.as_deref()),
                Direction::Outbound => ("Outbound call to", call.to_number.as_deref()),
            };
            let who = customer
                .as_ref()
                .map(|c| c.name.as_str())
                .or(other)
                .unwrap_or("unknown number");
            format!("{dir} {who}")
        }
    };
    let now = now_ms();
    let ticket = store
        .create_ticket(
            tenant,
            &NewTicket {
                subject,
                status: req.status.unwrap_or(TicketStatus::Open),
                description: summary,
                customer_id: customer.map(|c| c.id),
                call_id: Some(call.id.clone()),
                transcript_url: transcript_url(&call),
            },
            now,
        )
        .await?;
    store
        .append_call_log(
            tenant,
            &call.id,
            "ticket_created",
            &serde_json::json!({ "by": who.user_id, "ticket_id": ticket.id }),
            now,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(ticket)))
}
