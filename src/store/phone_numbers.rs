//! Phone numbers the tenant bought through the API, and the lookup that
//! routes an inbound call to its tenant.
//!
//! Provisioning writes a `pending` row before asking the provider (the
//! unique index on live numbers stops two requests buying one number), turns
//! it `active` once the provider answers, and deletes it if the provider
//! refuses. A row left `pending` says a provisioning attempt was cut short.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{get_enum, new_id, text_enum, Result, Store, StoreError};

text_enum! {
    pub enum NumberStatus {
        Pending => "pending",
        Active => "active",
        Releasing => "releasing",
        Released => "released",
        Failed => "failed",
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PhoneNumber {
    pub id: String,
    /// E.164, e.g. `+14155552671`.
    pub number: String,
    pub provider: String,
    /// The provider's id for the number (Twilio `PN…`), once provisioned.
    pub provider_id: Option<String>,
    pub friendly_name: Option<String>,
    pub status: NumberStatus,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, number, provider, external_id, friendly_name, status, created_at, updated_at";

fn from_row(row: &AnyRow) -> Result<PhoneNumber> {
    Ok(PhoneNumber {
        id: row.try_get("id")?,
        number: row.try_get("number")?,
        provider: row.try_get("provider")?,
        provider_id: row.try_get("external_id")?,
        friendly_name: row.try_get("friendly_name")?,
        status: get_enum(row, "status")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Claims `number` for the tenant before it is bought. Conflict when the
    /// number is live anywhere (owned or being provisioned).
    pub async fn insert_pending_number(
        &self,
        tenant_id: &str,
        number: &str,
        provider: &str,
        friendly_name: Option<&str>,
        now: i64,
    ) -> Result<PhoneNumber> {
        let _writer = self.writer().await;
        let row = sqlx::query(&format!(
            "INSERT INTO phone_numbers (id, tenant_id, number, provider, external_id, friendly_name, \
             status, created_at, updated_at) VALUES ($1, $2, $3, $4, NULL, $5, 'pending', $6, $6) \
             RETURNING {COLUMNS}"
        ))
        .bind(new_id())
        .bind(tenant_id)
        .bind(number)
        .bind(provider)
        .bind(friendly_name)
        .bind(now)
        .fetch_one(self.pool())
        .await;
        match row {
            Ok(row) => from_row(&row),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict("this number is already in use".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A pending number the provider has sold us.
    pub async fn activate_number(
        &self,
        tenant_id: &str,
        id: &str,
        provider_id: &str,
        friendly_name: Option<&str>,
        now: i64,
    ) -> Result<PhoneNumber> {
        let _writer = self.writer().await;
        let row = sqlx::query(&format!(
            "UPDATE phone_numbers SET status = 'active', external_id = $1, \
             friendly_name = COALESCE($2, friendly_name), updated_at = $3 \
             WHERE tenant_id = $4 AND id = $5 AND status = 'pending' RETURNING {COLUMNS}"
        ))
        .bind(provider_id)
        .bind(friendly_name)
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// Forgets a pending number the provider refused to sell.
    pub async fn delete_pending_number(&self, tenant_id: &str, id: &str) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "DELETE FROM phone_numbers WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Moves a number from `from` to `to`; NotFound unless it is in `from`
    /// (so two concurrent releases cannot both proceed).
    pub async fn set_number_status(
        &self,
        tenant_id: &str,
        id: &str,
        from: NumberStatus,
        to: NumberStatus,
        now: i64,
    ) -> Result<PhoneNumber> {
        let _writer = self.writer().await;
        let row = sqlx::query(&format!(
            "UPDATE phone_numbers SET status = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND status = $5 RETURNING {COLUMNS}"
        ))
        .bind(to.as_str())
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .bind(from.as_str())
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// A number that has not been released.
    pub async fn get_number(&self, tenant_id: &str, id: &str) -> Result<PhoneNumber> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM phone_numbers \
             WHERE tenant_id = $1 AND id = $2 AND status <> 'released'"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// The tenant's numbers not yet released, oldest first.
    pub async fn list_numbers(&self, tenant_id: &str) -> Result<Vec<PhoneNumber>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM phone_numbers WHERE tenant_id = $1 AND status <> 'released' \
             ORDER BY created_at, id"
        ))
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Routing: the tenant's active row for `number`, if it owns it.
    pub async fn find_active_number(
        &self,
        tenant_id: &str,
        number: &str,
    ) -> Result<Option<PhoneNumber>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM phone_numbers \
             WHERE tenant_id = $1 AND number = $2 AND status = 'active'"
        ))
        .bind(tenant_id)
        .bind(number)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::stores;

    #[tokio::test]
    async fn lifecycle_and_uniqueness() {
        for store in stores().await {
            let a = store.create_tenant("A", None).await.unwrap();
            let b = store.create_tenant("B", None).await.unwrap();
            let n = store
                .insert_pending_number(&a.id, "+14155552671", "twilio", Some("Main"), 1)
                .await
                .unwrap();
            assert_eq!(n.status, NumberStatus::Pending);
            // Live in one tenant: nobody else may claim it.
            let err = store
                .insert_pending_number(&b.id, "+14155552671", "twilio", None, 2)
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err}");
            assert!(store
                .find_active_number(&a.id, "+14155552671")
                .await
                .unwrap()
                .is_none());
            let n = store
                .activate_number(&a.id, &n.id, "PNx", None, 3)
                .await
                .unwrap();
            assert_eq!(n.provider_id.as_deref(), Some("PNx"));
            assert_eq!(n.friendly_name.as_deref(), Some("Main"));
            assert!(store
                .find_active_number(&a.id, "+14155552671")
                .await
                .unwrap()
                .is_some());
            assert!(store
                .find_active_number(&b.id, "+14155552671")
                .await
                .unwrap()
                .is_none());
            assert!(matches!(
                store.get_number(&b.id, &n.id).await,
                Err(StoreError::NotFound)
            ));
            store
                .set_number_status(
                    &a.id,
                    &n.id,
                    NumberStatus::Active,
                    NumberStatus::Releasing,
                    4,
                )
                .await
                .unwrap();
            // A second release finds it no longer active.
            assert!(store
                .set_number_status(
                    &a.id,
                    &n.id,
                    NumberStatus::Active,
                    NumberStatus::Releasing,
                    4
                )
                .await
                .is_err());
            store
                .set_number_status(
                    &a.id,
                    &n.id,
                    NumberStatus::Releasing,
                    NumberStatus::Released,
                    5,
                )
                .await
                .unwrap();
            assert!(store.list_numbers(&a.id).await.unwrap().is_empty());
            // Released: free to buy again, by anyone.
            let again = store
                .insert_pending_number(&b.id, "+14155552671", "twilio", None, 6)
                .await
                .unwrap();
            store.delete_pending_number(&b.id, &again.id).await.unwrap();
            assert!(store.list_numbers(&b.id).await.unwrap().is_empty());
        }
    }
}
