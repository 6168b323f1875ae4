//! The CRM link: customers (with their phone numbers) and tickets, and the
//! matching of calls to customers by normalised phone number.
//!
//! Cross-row references (a ticket's customer and call) are checked to belong
//! to the tenant by the API before they reach here; foreign keys keep them
//! pointing at rows that exist.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{get_enum, new_id, text_enum, Call, Direction, Result, Store, StoreError};

text_enum! {
    pub enum TicketStatus {
        Open => "open",
        Pending => "pending",
        Closed => "closed",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Customer {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// Normalised E.164, in the order given.
    pub phone_numbers: Vec<String>,
    pub email: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A customer to create; numbers already normalised and deduplicated.
#[derive(Debug, Clone)]
pub struct NewCustomer {
    pub name: String,
    pub phone_numbers: Vec<String>,
    pub email: Option<String>,
}

/// `None` leaves a field alone; `email: Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct CustomerUpdate {
    pub name: Option<String>,
    pub phone_numbers: Option<Vec<String>>,
    pub email: Option<Option<String>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CustomerPage {
    pub customers: Vec<Customer>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ticket {
    pub id: String,
    pub tenant_id: String,
    pub subject: String,
    pub status: TicketStatus,
    pub description: Option<String>,
    pub customer_id: Option<String>,
    pub call_id: Option<String>,
    /// Where the call's transcript is read (`/v1/calls/{id}/transcript`).
    pub transcript_url: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewTicket {
    pub subject: String,
    pub status: TicketStatus,
    pub description: Option<String>,
    pub customer_id: Option<String>,
    pub call_id: Option<String>,
    pub transcript_url: Option<String>,
}

/// `None` leaves a field alone; an inner `None` clears it.
#[derive(Debug, Clone, Default)]
pub struct TicketUpdate {
    pub subject: Option<String>,
    pub status: Option<TicketStatus>,
    pub description: Option<Option<String>>,
    pub customer_id: Option<Option<String>>,
    pub call_id: Option<Option<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub status: Option<TicketStatus>,
    pub customer_id: Option<String>,
    pub call_id: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TicketPage {
    pub tickets: Vec<Ticket>,
    pub next_cursor: Option<String>,
}

const TICKET_COLUMNS: &str = "id, tenant_id, subject, status, description, customer_id, call_id, \
     transcript_url, created_at, updated_at";

fn ticket_from_row(row: &AnyRow) -> Result<Ticket> {
    Ok(Ticket {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        subject: row.try_get("subject")?,
        status: get_enum(row, "status")?,
        description: row.try_get("description")?,
        customer_id: row.try_get("customer_id")?,
        call_id: row.try_get("call_id")?,
        transcript_url: row.try_get("transcript_url")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A number another customer of the tenant already has.
fn number_taken(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

const NUMBER_TAKEN: &str = "a phone number already belongs to another customer of this tenant";

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

async fn insert_numbers(
    tx: &mut Tx<'_>,
    tenant_id: &str,
    customer_id: &str,
    numbers: &[String],
) -> Result<()> {
    for (i, n) in numbers.iter().enumerate() {
        let r = sqlx::query(
            "INSERT INTO customer_phone_numbers (tenant_id, customer_id, number, position) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant_id)
        .bind(customer_id)
        .bind(n)
        .bind(i as i64)
        .execute(&mut **tx)
        .await;
        match r {
            Ok(_) => {}
            Err(e) if number_taken(&e) => return Err(StoreError::Conflict(NUMBER_TAKEN.into())),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Store {
    pub async fn create_customer(
        &self,
        tenant_id: &str,
        new: &NewCustomer,
        now: i64,
    ) -> Result<Customer> {
        let id = new_id();
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO customers (id, tenant_id, name, email, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(&new.name)
        .bind(&new.email)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_numbers(&mut tx, tenant_id, &id, &new.phone_numbers).await?;
        tx.commit().await?;
        Ok(Customer {
            id,
            tenant_id: tenant_id.to_string(),
            name: new.name.clone(),
            phone_numbers: new.phone_numbers.clone(),
            email: new.email.clone(),
            created_at: now,
            updated_at: now,
        })
    }

    pub async fn get_customer(&self, tenant_id: &str, id: &str) -> Result<Customer> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, email, created_at, updated_at FROM customers \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        let mut list = self.customers_from_rows(tenant_id, &[row]).await?;
        list.pop().ok_or(StoreError::NotFound)
    }

    async fn customers_from_rows(&self, tenant_id: &str, rows: &[AnyRow]) -> Result<Vec<Customer>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let numbers = sqlx::query(
                "SELECT number FROM customer_phone_numbers WHERE tenant_id = $1 \
                 AND customer_id = $2 ORDER BY position",
            )
            .bind(tenant_id)
            .bind(&id)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("number"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
            out.push(Customer {
                id,
                tenant_id: row.try_get("tenant_id")?,
                name: row.try_get("name")?,
                phone_numbers: numbers,
                email: row.try_get("email")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            });
        }
        Ok(out)
    }

    /// Customers oldest first (stable for paging); `number` keeps the one
    /// holding that normalised number.
    pub async fn list_customers(
        &self,
        tenant_id: &str,
        number: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<CustomerPage> {
        let limit = limit.clamp(1, 500) as i64;
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, email, created_at, updated_at FROM customers c \
             WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) AND ($3 IS NULL OR EXISTS \
             (SELECT 1 FROM customer_phone_numbers p WHERE p.tenant_id = c.tenant_id \
              AND p.customer_id = c.id AND p.number = $3)) ORDER BY id LIMIT $4",
        )
        .bind(tenant_id)
        .bind(cursor)
        .bind(number)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let mut customers = self.customers_from_rows(tenant_id, &rows).await?;
        let next_cursor = if customers.len() as i64 > limit {
            customers.truncate(limit as usize);
            customers.last().map(|c| c.id.clone())
        } else {
            None
        };
        Ok(CustomerPage {
            customers,
            next_cursor,
        })
    }

    pub async fn update_customer(
        &self,
        tenant_id: &str,
        id: &str,
        update: &CustomerUpdate,
        now: i64,
    ) -> Result<Customer> {
        {
            let _writer = self.writer().await;
            let mut tx = self.begin().await?;
            let found = sqlx::query(
                "UPDATE customers SET name = COALESCE($1, name), \
                 email = CASE WHEN $2 = 1 THEN $3 ELSE email END, updated_at = $4 \
                 WHERE tenant_id = $5 AND id = $6",
            )
            .bind(&update.name)
            .bind(update.email.is_some() as i64)
            .bind(update.email.clone().flatten())
            .bind(now)
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if found.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            if let Some(numbers) = &update.phone_numbers {
                sqlx::query(
                    "DELETE FROM customer_phone_numbers WHERE tenant_id = $1 AND customer_id = $2",
                )
                .bind(tenant_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                insert_numbers(&mut tx, tenant_id, id, numbers).await?;
            }
            tx.commit().await?;
        }
        self.get_customer(tenant_id, id).await
    }

    /// Deletes a customer; their calls and tickets stay, unlinked.
    pub async fn delete_customer(&self, tenant_id: &str, id: &str) -> Result<()> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        for sql in [
            "UPDATE calls SET customer_id = NULL WHERE tenant_id = $1 AND customer_id = $2",
            "UPDATE tickets SET customer_id = NULL WHERE tenant_id = $1 AND customer_id = $2",
            "DELETE FROM customer_phone_numbers WHERE tenant_id = $1 AND customer_id = $2",
        ] {
            sqlx::query(sql)
                .bind(tenant_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let gone = sqlx::query("DELETE FROM customers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    /// The customer holding `number` (normalised E.164), if any.
    pub async fn find_customer_by_number(
        &self,
        tenant_id: &str,
        number: &str,
    ) -> Result<Option<Customer>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT customer_id FROM customer_phone_numbers WHERE tenant_id = $1 AND number = $2",
        )
        .bind(tenant_id)
        .bind(number)
        .fetch_optional(self.pool())
        .await?;
        match id {
            Some(id) => match self.get_customer(tenant_id, &id).await {
                Ok(c) => Ok(Some(c)),
                Err(StoreError::NotFound) => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    }

    /// The customer a call is with, by the other party's number: the caller
    /// of an inbound call, the callee of an outbound one.
    pub async fn customer_for_call(&self, call: &Call) -> Result<Option<Customer>> {
        let other = match call.direction {
            Direction::Inbound => call.from_number.as_deref(),
            Direction::Outbound => call.to_number.as_deref(),
        };
        let Some(number) = other.and_then(|n| crate::phone::E164::normalize(n, None).ok()) else {
            return Ok(None);
        };
        self.find_customer_by_number(&call.tenant_id, number.as_str())
            .await
    }

    /// Links a call to its customer by phone number, unless it is linked
    /// already. For the code that creates or updates call rows (webhooks,
    /// outbound calls). Returns the call's customer id after the match.
    pub async fn match_call_customer(
        &self,
        tenant_id: &str,
        call_id: &str,
    ) -> Result<Option<String>> {
        let call = self.get_call(tenant_id, call_id).await?;
        if call.customer_id.is_some() {
            return Ok(call.customer_id);
        }
        let Some(customer) = self.customer_for_call(&call).await? else {
            return Ok(None);
        };
        let _writer = self.writer().await;
        sqlx::query(
            "UPDATE calls SET customer_id = $1 WHERE tenant_id = $2 AND id = $3 \
             AND customer_id IS NULL",
        )
        .bind(&customer.id)
        .bind(tenant_id)
        .bind(call_id)
        .execute(self.pool())
        .await?;
        Ok(Some(customer.id))
    }

    /// Creates a ticket. With a call, the call is linked to it too, unless
    /// the call already has a ticket (`Conflict`, nothing written).
    pub async fn create_ticket(
        &self,
        tenant_id: &str,
        new: &NewTicket,
        now: i64,
    ) -> Result<Ticket> {
        let id = new_id();
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO tickets (id, tenant_id, subject, status, description, customer_id, \
             call_id, transcript_url, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING {TICKET_COLUMNS}"
        ))
        .bind(&id)
        .bind(tenant_id)
        .bind(&new.subject)
        .bind(new.status.as_str())
        .bind(&new.description)
        .bind(&new.customer_id)
        .bind(&new.call_id)
        .bind(&new.transcript_url)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(call_id) = &new.call_id {
            let linked = sqlx::query(
                "UPDATE calls SET ticket_id = $1, updated_at = $2 WHERE tenant_id = $3 \
                 AND id = $4 AND ticket_id IS NULL",
            )
            .bind(&id)
            .bind(now)
            .bind(tenant_id)
            .bind(call_id)
            .execute(&mut *tx)
            .await?;
            if linked.rows_affected() == 0 {
                return Err(StoreError::Conflict(
                    "the call is already linked to a ticket".into(),
                ));
            }
        }
        tx.commit().await?;
        ticket_from_row(&row)
    }

    pub async fn get_ticket(&self, tenant_id: &str, id: &str) -> Result<Ticket> {
        let row = sqlx::query(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        ticket_from_row(&row)
    }

    /// Tickets newest first.
    pub async fn list_tickets(
        &self,
        tenant_id: &str,
        filter: &TicketFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<TicketPage> {
        let limit = limit.clamp(1, 500) as i64;
        let rows = sqlx::query(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE tenant_id = $1 \
             AND ($2 IS NULL OR id < $2) AND ($3 IS NULL OR status = $3) \
             AND ($4 IS NULL OR customer_id = $4) AND ($5 IS NULL OR call_id = $5) \
             ORDER BY id DESC LIMIT $6"
        ))
        .bind(tenant_id)
        .bind(cursor)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(&filter.customer_id)
        .bind(&filter.call_id)
        .bind(limit + 1)
        .fetch_all(self.pool())
        .await?;
        let mut tickets = rows
            .iter()
            .map(ticket_from_row)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if tickets.len() as i64 > limit {
            tickets.truncate(limit as usize);
            tickets.last().map(|t| t.id.clone())
        } else {
            None
        };
        Ok(TicketPage {
            tickets,
            next_cursor,
        })
    }

    pub async fn update_ticket(
        &self,
        tenant_id: &str,
        id: &str,
        update: &TicketUpdate,
        now: i64,
    ) -> Result<Ticket> {
        let flag = |o: bool| o as i64;
        let _writer = self.writer().await;
        let row = sqlx::query(&format!(
            "UPDATE tickets SET subject = COALESCE($1, subject), status = COALESCE($2, status), \
             description = CASE WHEN $3 = 1 THEN $4 ELSE description END, \
             customer_id = CASE WHEN $5 = 1 THEN $6 ELSE customer_id END, \
             call_id = CASE WHEN $7 = 1 THEN $8 ELSE call_id END, updated_at = $9 \
             WHERE tenant_id = $10 AND id = $11 RETURNING {TICKET_COLUMNS}"
        ))
        .bind(&update.subject)
        .bind(update.status.map(|s| s.as_str()))
        .bind(flag(update.description.is_some()))
        .bind(update.description.clone().flatten())
        .bind(flag(update.customer_id.is_some()))
        .bind(update.customer_id.clone().flatten())
        .bind(flag(update.call_id.is_some()))
        .bind(update.call_id.clone().flatten())
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        ticket_from_row(&row)
    }

    /// Deletes a ticket; calls linked to it stay, unlinked.
    pub async fn delete_ticket(&self, tenant_id: &str, id: &str) -> Result<()> {
        let _writer = self.writer().await;
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE calls SET ticket_id = NULL WHERE tenant_id = $1 AND ticket_id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM tickets WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{testing, CallFilter, CallRecordUpdate, CallStatus, OutboundCallRow};

    fn customer(name: &str, numbers: &[&str]) -> NewCustomer {
        NewCustomer {
            name: name.into(),
            phone_numbers: numbers.iter().map(|n| n.to_string()).collect(),
            email: None,
        }
    }

    fn outbound<'a>(sid: &'a str, to: &'a str) -> OutboundCallRow<'a> {
        OutboundCallRow {
            provider: "twilio",
            external_call_id: sid,
            from_number: "+14155550100",
            to_number: to,
            customer_id: None,
            assigned_user_id: None,
        }
    }

    /// Every statement here runs on both backends (the SQL is shared).
    #[tokio::test]
    async fn customers_tickets_and_matching_on_every_backend() {
        for store in testing::stores().await {
            let a = store.create_tenant("A", None).await.unwrap();
            let b = store.create_tenant("B", None).await.unwrap();
            let ada = store
                .create_customer(&a.id, &customer("Ada", &["+442079460958"]), 1)
                .await
                .unwrap();
            // Unique per tenant, not across tenants.
            assert!(matches!(
                store
                    .create_customer(&a.id, &customer("Eve", &["+442079460958"]), 2)
                    .await,
                Err(StoreError::Conflict(_))
            ));
            store
                .create_customer(&b.id, &customer("Bea", &["+442079460958"]), 2)
                .await
                .unwrap();
            let page = store.list_customers(&a.id, None, 10, None).await.unwrap();
            assert_eq!(
                page.customers,
                vec![ada.clone()],
                "the failed insert left nothing"
            );
            assert!(matches!(
                store.get_customer(&b.id, &ada.id).await,
                Err(StoreError::NotFound)
            ));

            let updated = store
                .update_customer(
                    &a.id,
                    &ada.id,
                    &CustomerUpdate {
                        name: None,
                        phone_numbers: Some(vec!["+14155552671".into(), "+442079460958".into()]),
                        email: Some(Some("ada@example.com".into())),
                    },
                    3,
                )
                .await
                .unwrap();
            assert_eq!(updated.name, "Ada");
            assert_eq!(updated.phone_numbers, ["+14155552671", "+442079460958"]);
            assert_eq!(updated.email.as_deref(), Some("ada@example.com"));
            let cleared = store
                .update_customer(
                    &a.id,
                    &ada.id,
                    &CustomerUpdate {
                        email: Some(None),
                        ..Default::default()
                    },
                    4,
                )
                .await
                .unwrap();
            assert_eq!(cleared.email, None);
            assert_eq!(cleared.phone_numbers.len(), 2);
            assert!(matches!(
                store
                    .update_customer(&b.id, &ada.id, &CustomerUpdate::default(), 5)
                    .await,
                Err(StoreError::NotFound)
            ));
            let by_number = store
                .list_customers(&a.id, Some("+14155552671"), 10, None)
                .await
                .unwrap();
            assert_eq!(by_number.customers.len(), 1);

            // An outbound call to her number matches her; one to another doesn't.
            let call = store
                .create_outbound_call(&a.id, &outbound("CA1", "+14155552671"), 10)
                .await
                .unwrap();
            assert_eq!(call.status, CallStatus::Queued);
            let other = store
                .create_outbound_call(&a.id, &outbound("CA2", "+14155550199"), 11)
                .await
                .unwrap();
            assert_eq!(
                store.match_call_customer(&a.id, &call.id).await.unwrap(),
                Some(ada.id.clone())
            );
            assert_eq!(
                store.match_call_customer(&a.id, &other.id).await.unwrap(),
                None
            );
            assert!(matches!(
                store.match_call_customer(&b.id, &call.id).await,
                Err(StoreError::NotFound)
            ));
            // The same CallSid again (a callback raced ahead) is the same row.
            let again = store
                .create_outbound_call(&a.id, &outbound("CA1", "+14155552671"), 12)
                .await
                .unwrap();
            assert_eq!(again.id, call.id);
            assert_eq!(again.customer_id.as_deref(), Some(ada.id.as_str()));

            // Filters.
            let f = |status, number: Option<&str>| CallFilter {
                status,
                number: number.map(str::to_string),
                ..Default::default()
            };
            let n = |p: crate::store::CallPage| p.calls.len();
            let list = |filter: CallFilter| {
                let store = &store;
                let t = a.id.clone();
                async move {
                    store
                        .list_calls_filtered(&t, &filter, 10, None)
                        .await
                        .unwrap()
                }
            };
            assert_eq!(n(list(f(Some(CallStatus::Queued), None)).await), 2);
            assert_eq!(n(list(f(Some(CallStatus::Completed), None)).await), 0);
            assert_eq!(n(list(f(None, Some("+14155552671"))).await), 1);
            assert_eq!(n(list(f(None, Some("+14155550100"))).await), 2);
            assert_eq!(
                n(list(CallFilter {
                    created_from: Some(11),
                    created_to: Some(12),
                    ..Default::default()
                })
                .await),
                1
            );

            // Record edits: set, clear, leave alone.
            let edited = store
                .update_call_record(
                    &a.id,
                    &call.id,
                    &CallRecordUpdate {
                        disposition: Some(Some("resolved".into())),
                        notes: Some(Some("n".into())),
                        conference_sid: Some(Some("CF1".into())),
                        ..Default::default()
                    },
                    13,
                )
                .await
                .unwrap();
            assert_eq!(edited.disposition.as_deref(), Some("resolved"));
            assert_eq!(edited.conference_sid.as_deref(), Some("CF1"));
            let edited = store
                .update_call_record(
                    &a.id,
                    &call.id,
                    &CallRecordUpdate {
                        notes: Some(None),
                        ..Default::default()
                    },
                    14,
                )
                .await
                .unwrap();
            assert_eq!(edited.notes, None);
            assert_eq!(edited.disposition.as_deref(), Some("resolved"));
            assert!(matches!(
                store
                    .update_call_record(&b.id, &call.id, &CallRecordUpdate::default(), 15)
                    .await,
                Err(StoreError::NotFound)
            ));

            // Tickets: one per call; updates; deletes unlink.
            let new = |call_id: Option<&str>| NewTicket {
                subject: "Refund".into(),
                status: TicketStatus::Open,
                description: Some("d".into()),
                customer_id: Some(ada.id.clone()),
                call_id: call_id.map(str::to_string),
                transcript_url: None,
            };
            let ticket = store
                .create_ticket(&a.id, &new(Some(&call.id)), 20)
                .await
                .unwrap();
            assert_eq!(
                store.get_call(&a.id, &call.id).await.unwrap().ticket_id,
                Some(ticket.id.clone())
            );
            assert!(matches!(
                store.create_ticket(&a.id, &new(Some(&call.id)), 21).await,
                Err(StoreError::Conflict(_))
            ));
            let all = store
                .list_tickets(&a.id, &TicketFilter::default(), 10, None)
                .await
                .unwrap();
            assert_eq!(all.tickets.len(), 1, "the refused ticket was rolled back");
            let t2 = store.create_ticket(&a.id, &new(None), 22).await.unwrap();
            let closed = store
                .update_ticket(
                    &a.id,
                    &t2.id,
                    &TicketUpdate {
                        status: Some(TicketStatus::Closed),
                        description: Some(None),
                        call_id: Some(Some(other.id.clone())),
                        ..Default::default()
                    },
                    23,
                )
                .await
                .unwrap();
            assert_eq!(closed.status, TicketStatus::Closed);
            assert_eq!(closed.description, None);
            assert_eq!(closed.subject, "Refund");
            assert_eq!(closed.call_id.as_deref(), Some(other.id.as_str()));
            let filtered = |filter: TicketFilter| {
                let store = &store;
                let t = a.id.clone();
                async move {
                    store
                        .list_tickets(&t, &filter, 10, None)
                        .await
                        .unwrap()
                        .tickets
                }
            };
            assert_eq!(
                filtered(TicketFilter {
                    status: Some(TicketStatus::Closed),
                    ..Default::default()
                })
                .await,
                vec![closed.clone()]
            );
            assert_eq!(
                filtered(TicketFilter {
                    call_id: Some(call.id.clone()),
                    ..Default::default()
                })
                .await
                .len(),
                1
            );
            let first = store
                .list_tickets(&a.id, &TicketFilter::default(), 1, None)
                .await
                .unwrap();
            assert_eq!(first.tickets[0].id, t2.id, "newest first");
            let second = store
                .list_tickets(
                    &a.id,
                    &TicketFilter::default(),
                    1,
                    first.next_cursor.as_deref(),
                )
                .await
                .unwrap();
            assert_eq!(second.tickets[0].id, ticket.id);
            assert!(second.next_cursor.is_none());
            assert!(store
                .list_tickets(&b.id, &TicketFilter::default(), 10, None)
                .await
                .unwrap()
                .tickets
                .is_empty());

            assert!(matches!(
                store.delete_customer(&b.id, &ada.id).await,
                Err(StoreError::NotFound)
            ));
            store.delete_customer(&a.id, &ada.id).await.unwrap();
            assert_eq!(
                store.get_call(&a.id, &call.id).await.unwrap().customer_id,
                None
            );
            assert_eq!(
                store
                    .get_ticket(&a.id, &ticket.id)
                    .await
                    .unwrap()
                    .customer_id,
                None
            );
            assert_eq!(
                store
                    .find_customer_by_number(&a.id, "+14155552671")
                    .await
                    .unwrap(),
                None
            );
            store.delete_ticket(&a.id, &ticket.id).await.unwrap();
            assert_eq!(
                store.get_call(&a.id, &call.id).await.unwrap().ticket_id,
                None
            );
            assert!(matches!(
                store.delete_ticket(&a.id, &ticket.id).await,
                Err(StoreError::NotFound)
            ));
        }
    }
}
