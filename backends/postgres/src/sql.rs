//! Pieces of SQL every statement shares: parameters, key conditions, rows as
//! key-values, running a cached statement.

use coordkit::{KeyRange, KeyValue, LeaseId, Result};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::error::from_pg;

/// The parameters of one statement, numbered as they are added.
#[derive(Default)]
pub(crate) struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    /// Add a parameter; returns its placeholder (`$n`).
    pub(crate) fn add(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    /// The parameters as a statement takes them.
    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The condition selecting `keys` in `column` (bytea compares byte by byte,
/// as etcd orders keys).
pub(crate) fn key_condition(keys: &KeyRange, column: &str, params: &mut Params) -> String {
    match keys {
        KeyRange::Key(k) => format!("{column} = {}", params.add(k.clone())),
        KeyRange::Prefix(p) if p.is_empty() => "true".to_string(),
        KeyRange::Prefix(p) => {
            let end = KeyRange::prefix_end(p);
            let from = params.add(p.clone());
            if end == [0] {
                // Only 0xff bytes: every key from the prefix on.
                format!("{column} >= {from}")
            } else {
                format!("{column} >= {from} AND {column} < {}", params.add(end))
            }
        }
    }
}

/// The columns `kv_from` reads, starting at `first`: key, value,
/// create_revision, mod_revision, version, lease.
pub(crate) fn kv_from(row: &Row, first: usize) -> KeyValue {
    KeyValue {
        key: row.get(first),
        value: row.get(first + 1),
        create_revision: row.get(first + 2),
        mod_revision: row.get(first + 3),
        version: row.get(first + 4),
        lease: row.get::<_, Option<i64>>(first + 5).map(LeaseId),
    }
}

/// Run `sql` (prepared once per connection) and return its rows.
pub(crate) async fn query(
    client: &impl GenericClient,
    sql: &str,
    params: &Params,
    during: &'static str,
) -> Result<Vec<Row>> {
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(|e| from_pg(e, during))?;
    client
        .query(&statement, &params.refs())
        .await
        .map_err(|e| from_pg(e, during))
}
