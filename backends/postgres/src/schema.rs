//! The tables of one store, created and migrated on connect.
//!
//! ```text
//! meta     one row: revision (the store's), compacted (the compaction revision
//!          in force), purged (history at or below it is deleted), version
//! kv       the newest version of every live key
//! history  every change: one row per key per revision, with the previous
//!          version inline (for prev_kv); reads at past revisions and watches
//!          read it
//! lease    id, ttl, deadline (on the database clock)
//! ```
//!
//! Every write transaction locks the meta row first and holds it to commit,
//! so revisions commit in order: a reader that sees revision r sees every
//! revision below it.

use coordkit::{Error, Result};
use tokio_postgres::Client;

use crate::error::from_pg;

/// The schema version this crate writes.
pub(crate) const VERSION: i32 = 1;

/// The first lease id handed out (ids come from a sequence: never reused).
const FIRST_LEASE_ID: i64 = 0x0c00_0000_0001;

/// Quoted names of one store's tables and its notification channel.
#[derive(Clone, Debug)]
pub(crate) struct Tables {
    pub(crate) meta: String,
    pub(crate) kv: String,
    pub(crate) history: String,
    pub(crate) lease: String,
    pub(crate) lease_ids: String,
    /// The LISTEN/NOTIFY channel (an identifier; `pg_notify` takes it as text).
    pub(crate) channel: String,
}

impl Tables {
    /// The tables of `schema` (a name checked by `PostgresConfig::validate`).
    pub(crate) fn new(schema: &str) -> Self {
        let t = |name: &str| format!("\"{schema}\".{name}");
        Tables {
            meta: t("meta"),
            kv: t("kv"),
            history: t("history"),
            lease: t("lease"),
            lease_ids: t("lease_ids"),
            channel: format!("coordkit_{schema}"),
        }
    }
}

/// Create the schema's tables, or bring them to [`VERSION`]. Idempotent, and
/// safe when several processes connect at once (an advisory lock serializes
/// them). A schema written by a newer version of this crate is refused.
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<()> {
    let t = Tables::new(schema);
    let tx = client
        .transaction()
        .await
        .map_err(|e| from_pg(e, "migrate"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("coordkit.migrate.{schema}")],
    )
    .await
    .map_err(|e| from_pg(e, "migrate"))?;
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("\"{schema}\".meta")],
        )
        .await
        .map_err(|e| from_pg(e, "migrate"))?
        .get(0);
    if exists {
        let version: i32 = tx
            .query_one(&format!("SELECT version FROM {}", t.meta), &[])
            .await
            .map_err(|e| from_pg(e, "migrate"))?
            .get(0);
        if version > VERSION {
            return Err(Error::invalid(
                "schema",
                format!(
                    "{schema} holds a store of schema version {version}; this coordkit-postgres writes version {VERSION}: upgrade it"
                ),
            ));
        }
    } else {
        tx.batch_execute(&version_1(schema, &t))
            .await
            .map_err(|e| from_pg(e, "migrate"))?;
    }
    tx.commit().await.map_err(|e| from_pg(e, "migrate"))
}

fn version_1(schema: &str, t: &Tables) -> String {
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS "{schema}";
CREATE TABLE {meta} (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    revision bigint NOT NULL,
    compacted bigint NOT NULL,
    purged bigint NOT NULL,
    version integer NOT NULL
);
INSERT INTO {meta} (revision, compacted, purged, version) VALUES (1, 0, 0, 1);
CREATE TABLE {kv} (
    key bytea PRIMARY KEY,
    value bytea NOT NULL,
    create_revision bigint NOT NULL,
    mod_revision bigint NOT NULL,
    version bigint NOT NULL,
    lease bigint
);
CREATE INDEX ON {kv} (lease) WHERE lease IS NOT NULL;
CREATE TABLE {history} (
    revision bigint NOT NULL,
    seq integer NOT NULL,
    key bytea NOT NULL,
    deleted boolean NOT NULL,
    value bytea NOT NULL,
    create_revision bigint NOT NULL,
    version bigint NOT NULL,
    lease bigint,
    prev_value bytea,
    prev_create_revision bigint,
    prev_mod_revision bigint,
    prev_version bigint,
    prev_lease bigint,
    PRIMARY KEY (revision, seq)
);
CREATE INDEX ON {history} (key, revision);
CREATE TABLE {lease} (
    id bigint PRIMARY KEY,
    ttl bigint NOT NULL,
    deadline timestamptz NOT NULL
);
CREATE INDEX ON {lease} (deadline);
CREATE SEQUENCE {lease_ids} START {FIRST_LEASE_ID};
"#,
        meta = t.meta,
        kv = t.kv,
        history = t.history,
        lease = t.lease,
        lease_ids = t.lease_ids,
    )
}
