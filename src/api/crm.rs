//! Customers and tickets: CRUD, tenant-scoped. Phone numbers are normalised
//! to E.164 on the way in so calls match them exactly.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Deserializer};

use super::auth::Auth;
use super::error::{ApiJson, ApiQuery};
use super::{AppError, AppState};
use crate::phone::E164;
use crate::store::{
    now_ms, Customer, CustomerPage, CustomerUpdate, NewCustomer, NewTicket, StoreError, Ticket,
    TicketFilter, TicketPage, TicketStatus, TicketUpdate,
};

const MAX_NAME: usize = 200;
const MAX_SUBJECT: usize = 200;
const MAX_DESCRIPTION: usize = 20_000;
const MAX_NUMBERS: usize = 20;

/// `Some(None)` for an explicit `null`, so a field can be cleared.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn bounded(field: &str, raw: &str, max: usize) -> Result<String, AppError> {
    let s = raw.trim();
    if s.is_empty() || s.chars().count() > max {
        return Err(AppError::BadRequest(format!(
            "{field} must be 1–{max} characters"
        )));
    }
    Ok(s.to_string())
}

/// A ticket subject, trimmed and bounded.
pub(super) fn subject(raw: &str) -> Result<String, AppError> {
    bounded("subject", raw, MAX_SUBJECT)
}

fn email(raw: &str) -> Result<String, AppError> {
    let s = raw.trim();
    let ok = s.len() <= 254
        && s.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !s.chars().any(char::is_whitespace);
    if !ok {
        return Err(AppError::BadRequest("email is not a valid address".into()));
    }
    Ok(s.to_ascii_lowercase())
}

/// Normalises and deduplicates (keeping order).
fn phone_numbers(raw: &[String]) -> Result<Vec<String>, AppError> {
    if raw.len() > MAX_NUMBERS {
        return Err(AppError::BadRequest(format!(
            "at most {MAX_NUMBERS} phone numbers per customer"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, n) in raw.iter().enumerate() {
        let n = E164::normalize(n, None)
            .map_err(|e| {
                AppError::BadRequest(format!(
                    "phone_numbers[{i}] is not a valid E.164 number: {e}"
                ))
            })?
            .into_string();
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

fn limit(l: Option<u32>) -> Result<u32, AppError> {
    let l = l.unwrap_or(50);
    if !(1..=500).contains(&l) {
        return Err(AppError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    Ok(l)
}

// ---------------------------------------------------------------- customers

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    name: String,
    #[serde(default)]
    phone_numbers: Vec<String>,
    email: Option<String>,
}

pub async fn create_customer(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiJson(req): ApiJson<CreateCustomer>,
) -> Result<(StatusCode, Json<Customer>), AppError> {
    let new = NewCustomer {
        name: bounded("name", &req.name, MAX_NAME)?,
        phone_numbers: phone_numbers(&req.phone_numbers)?,
        email: req.email.as_deref().map(email).transpose()?,
    };
    let c = state
        .store
        .create_customer(&who.tenant_id, &new, now_ms())
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerParams {
    limit: Option<u32>,
    cursor: Option<String>,
    /// The customer holding this number (normalised first).
    number: Option<String>,
}

pub async fn list_customers(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiQuery(p): ApiQuery<CustomerParams>,
) -> Result<Json<CustomerPage>, AppError> {
    let number = p
        .number
        .as_deref()
        .map(|n| {
            E164::normalize(n, None)
                .map(E164::into_string)
                .map_err(|e| AppError::BadRequest(format!("number is not valid E.164: {e}")))
        })
        .transpose()?;
    let page = state
        .store
        .list_customers(
            &who.tenant_id,
            number.as_deref(),
            limit(p.limit)?,
            p.cursor.as_deref(),
        )
        .await?;
    Ok(Json(page))
}

pub async fn get_customer(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<Customer>, AppError> {
    Ok(Json(state.store.get_customer(&who.tenant_id, &id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCustomer {
    name: Option<String>,
    /// Replaces the whole list.
    phone_numbers: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    email: Option<Option<String>>,
}

pub async fn patch_customer(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PatchCustomer>,
) -> Result<Json<Customer>, AppError> {
    let update = CustomerUpdate {
        name: req
            .name
            .as_deref()
            .map(|n| bounded("name", n, MAX_NAME))
            .transpose()?,
        phone_numbers: req
            .phone_numbers
            .as_deref()
            .map(phone_numbers)
            .transpose()?,
        email: match req.email {
            Some(Some(e)) => Some(Some(email(&e)?)),
            other => other,
        },
    };
    let c = state
        .store
        .update_customer(&who.tenant_id, &id, &update, now_ms())
        .await?;
    Ok(Json(c))
}

pub async fn delete_customer(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    state.store.delete_customer(&who.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- tickets

/// Checks a ticket's references belong to the tenant (a foreign or unknown
/// id is the client's mistake: 400, not 404 for the ticket itself).
async fn check_refs(
    state: &AppState,
    tenant: &str,
    customer: Option<&str>,
    call: Option<&str>,
) -> Result<(), AppError> {
    if let Some(c) = customer {
        match state.store.get_customer(tenant, c).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                return Err(AppError::BadRequest(
                    "customer_id does not name a customer of this tenant".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(c) = call {
        match state.store.get_call(tenant, c).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                return Err(AppError::BadRequest(
                    "call_id does not name a call of this tenant".into(),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn description(raw: &str) -> Result<String, AppError> {
    if raw.chars().count() > MAX_DESCRIPTION {
        return Err(AppError::BadRequest(format!(
            "description must be at most {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(raw.to_string())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTicket {
    subject: String,
    /// `open`, `pending` or `closed`.
    #[schema(value_type = Option<String>)]
    status: Option<TicketStatus>,
    description: Option<String>,
    customer_id: Option<String>,
    /// Links the call to the ticket too (409 if it has one already).
    call_id: Option<String>,
}

pub async fn create_ticket(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiJson(req): ApiJson<CreateTicket>,
) -> Result<(StatusCode, Json<Ticket>), AppError> {
    let tenant = &who.tenant_id;
    let new = NewTicket {
        subject: subject(&req.subject)?,
        status: req.status.unwrap_or(TicketStatus::Open),
        description: req.description.as_deref().map(description).transpose()?,
        transcript_url: None,
        customer_id: req.customer_id,
        call_id: req.call_id,
    };
    check_refs(
        &state,
        tenant,
        new.customer_id.as_deref(),
        new.call_id.as_deref(),
    )
    .await?;
    let t = state.store.create_ticket(tenant, &new, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketParams {
    limit: Option<u32>,
    cursor: Option<String>,
    status: Option<TicketStatus>,
    customer_id: Option<String>,
    call_id: Option<String>,
}

pub async fn list_tickets(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiQuery(p): ApiQuery<TicketParams>,
) -> Result<Json<TicketPage>, AppError> {
    let filter = TicketFilter {
        status: p.status,
        customer_id: p.customer_id,
        call_id: p.call_id,
    };
    let page = state
        .store
        .list_tickets(
            &who.tenant_id,
            &filter,
            limit(p.limit)?,
            p.cursor.as_deref(),
        )
        .await?;
    Ok(Json(page))
}

pub async fn get_ticket(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<Ticket>, AppError> {
    Ok(Json(state.store.get_ticket(&who.tenant_id, &id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTicket {
    subject: Option<String>,
    /// `open`, `pending` or `closed`.
    #[schema(value_type = Option<String>)]
    status: Option<TicketStatus>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    customer_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    call_id: Option<Option<String>>,
}

pub async fn patch_ticket(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PatchTicket>,
) -> Result<Json<Ticket>, AppError> {
    let tenant = &who.tenant_id;
    // 404 for another tenant's ticket before any reference is judged.
    state.store.get_ticket(tenant, &id).await?;
    let update = TicketUpdate {
        subject: req.subject.as_deref().map(subject).transpose()?,
        status: req.status,
        description: match req.description {
            Some(Some(d)) => Some(Some(description(&d)?)),
            other => other,
        },
        customer_id: req.customer_id,
        call_id: req.call_id,
    };
    check_refs(
        &state,
        tenant,
        update.customer_id.clone().flatten().as_deref(),
        update.call_id.clone().flatten().as_deref(),
    )
    .await?;
    let t = state
        .store
        .update_ticket(tenant, &id, &update, now_ms())
        .await?;
    Ok(Json(t))
}

pub async fn delete_ticket(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    state.store.delete_ticket(&who.tenant_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
