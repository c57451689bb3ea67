//! Leases on the database clock (`clock_timestamp()`): granted and renewed
//! without a revision or the meta lock; ended (revoked, or reaped past their
//! deadline) in one revision that deletes the lease and its keys together.

use coordkit::{Error, LeaseGrant, LeaseId, LeaseInfo, Result};

use crate::sql::{query, Params};
use crate::write::{commit, Writing};
use crate::Inner;

impl Inner {
    pub(crate) async fn lease_grant(&self, ttl: i64) -> Result<LeaseGrant> {
        let client = self.client().await?;
        let mut params = Params::default();
        let ttl_param = params.add(ttl);
        let sql = format!(
            "INSERT INTO {lease} (id, ttl, deadline) \
             VALUES (nextval('{ids}'), {ttl_param}::bigint, \
                     clock_timestamp() + {ttl_param}::bigint * interval '1 second') RETURNING id",
            lease = self.tables.lease,
            ids = self.tables.lease_ids
        );
        let rows = query(&client, &sql, &params, "lease grant").await?;
        Ok(LeaseGrant {
            id: LeaseId(rows[0].get(0)),
            ttl,
        })
    }

    pub(crate) async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        let client = self.client().await?;
        let mut params = Params::default();
        let id_param = params.add(id.0);
        let sql = format!(
            "UPDATE {lease} SET deadline = clock_timestamp() + ttl * interval '1 second' \
             WHERE id = {id_param} AND deadline > clock_timestamp() RETURNING ttl",
            lease = self.tables.lease
        );
        let rows = query(&client, &sql, &params, "lease keep-alive").await?;
        match rows.first() {
            Some(row) => Ok(row.get(0)),
            None => {
                drop(client);
                self.end_overdue(id.0).await?;
                Err(Error::LeaseNotFound { id: id.0 })
            }
        }
    }

    pub(crate) async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseInfo> {
        let client = self.client().await?;
        let mut params = Params::default();
        let id_param = params.add(id.0);
        let sql = format!(
            "SELECT ttl, deadline > clock_timestamp(), \
                    greatest(0, floor(extract(epoch FROM deadline - clock_timestamp())))::bigint, \
                    ARRAY(SELECT key FROM {kv} WHERE lease = {id_param} ORDER BY key) \
             FROM {lease} WHERE id = {id_param}",
            lease = self.tables.lease,
            kv = self.tables.kv
        );
        let rows = query(&client, &sql, &params, "lease time-to-live").await?;
        drop(client);
        match rows.first() {
            Some(row) if row.get::<_, bool>(1) => Ok(LeaseInfo {
                id,
                granted_ttl: row.get(0),
                remaining_ttl: row.get(2),
                keys: row.get(3),
            }),
            Some(_) => {
                self.end_overdue(id.0).await?;
                Err(Error::LeaseNotFound { id: id.0 })
            }
            None => Err(Error::LeaseNotFound { id: id.0 }),
        }
    }

    pub(crate) async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| crate::error::from_pg(e, "lease revoke"))?;
        let mut w = Writing::begin(&tx, &self.tables).await?;
        let Some(overdue) = end_lease(&mut w, id.0, false).await? else {
            return Err(Error::LeaseNotFound { id: id.0 });
        };
        w.finish().await?;
        commit(tx).await?;
        if overdue {
            // It had ended already: its keys are gone now, and it was not found.
            return Err(Error::LeaseNotFound { id: id.0 });
        }
        Ok(())
    }

    /// End lease `id` if it is past its deadline (no other handle ended it
    /// first), in one revision with its keys.
    pub(crate) async fn end_overdue(&self, id: i64) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| crate::error::from_pg(e, "lease expiry"))?;
        let mut w = Writing::begin(&tx, &self.tables).await?;
        if end_lease(&mut w, id, true).await?.is_some() {
            w.finish().await?;
            commit(tx).await?;
        }
        Ok(())
    }

    /// The leases past their deadline, oldest first (at most `limit`).
    pub(crate) async fn overdue_leases(&self, limit: i64) -> Result<Vec<i64>> {
        let client = self.client().await?;
        let mut params = Params::default();
        let limit = params.add(limit);
        let sql = format!(
            "SELECT id FROM {lease} WHERE deadline <= clock_timestamp() ORDER BY deadline LIMIT {limit}",
            lease = self.tables.lease
        );
        let rows = query(&client, &sql, &params, "lease expiry").await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// Delete lease `id` (only if overdue, with `only_overdue`) and its keys, in
/// the revision `w` writes. `None` when there was no such lease; otherwise
/// whether it was past its deadline.
pub(crate) async fn end_lease<C: deadpool_postgres::GenericClient>(
    w: &mut Writing<'_, C>,
    id: i64,
    only_overdue: bool,
) -> Result<Option<bool>> {
    let mut params = Params::default();
    let id_param = params.add(id);
    let sql = format!(
        "DELETE FROM {lease} WHERE id = {id_param} {only} RETURNING deadline <= clock_timestamp()",
        lease = w.t.lease,
        only = if only_overdue {
            "AND deadline <= clock_timestamp()"
        } else {
            ""
        }
    );
    let rows = query(w.tx, &sql, &params, "lease end").await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let overdue: bool = row.get(0);
    let mut params = Params::default();
    let cond = format!("lease = {}", params.add(id));
    w.delete_where(&cond, params).await?;
    Ok(Some(overdue))
}

/// Keep ending overdue leases, every `interval`, while `inner` lives.
pub(crate) async fn reap(inner: std::sync::Weak<Inner>, interval: std::time::Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Ok(ids) = inner.overdue_leases(32).await else {
            continue;
        };
        for id in ids {
            if let Err(e) = inner.end_overdue(id).await {
                tracing::debug!(lease = id, error = %e, "postgres: ending an overdue lease failed; retried");
                break;
            }
        }
    }
}
