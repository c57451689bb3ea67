//! `coordctl status`: each endpoint's view (etcd) or the database's
//! (Postgres), and this process's.

use coordkit_etcd::EtcdBackend;
use coordkit_postgres::PostgresBackend;
use serde_json::json;

use crate::exit::{self, Failure, Outcome};
use crate::store::Store;
use crate::{output, Ctx};

pub async fn show(ctx: &Ctx) -> Outcome {
    let answered = match &ctx.store {
        Store::Etcd(etcd) => etcd_members(ctx, etcd).await,
        Store::Postgres(pg) => postgres(ctx, pg).await,
    };
    let health = ctx.coordinator.health().await;
    let view = format!("{health:?}");
    match ctx.format {
        output::Format::Json => {
            println!(
                "{}",
                json!({"namespace": ctx.keys.namespace(), "process": view})
            )
        }
        output::Format::Table => {
            println!("\nnamespace {}  this process: {view}", ctx.keys.namespace())
        }
    }
    answered
}

/// The database: server version and role, the store's revision and
/// compaction, its sizes.
async fn postgres(ctx: &Ctx, pg: &PostgresBackend) -> Outcome {
    let config = pg.config();
    let (row, doc) = match pg.status().await {
        Ok(s) => (
            vec![
                config.redacted_url(),
                "healthy".into(),
                config.schema().to_string(),
                if s.in_recovery { "standby" } else { "primary" }.into(),
                s.revision.to_string(),
                s.compacted.to_string(),
                format!(
                    "{} keys, {} history rows, {} leases",
                    s.keys, s.history_rows, s.leases
                ),
                format!("{:.1} MiB", s.database_size as f64 / 1024.0 / 1024.0),
                s.server_version.clone(),
            ],
            json!({"url": config.redacted_url(), "healthy": true, "schema": config.schema(), "standby": s.in_recovery, "revision": s.revision, "compacted": s.compacted, "keys": s.keys, "history_rows": s.history_rows, "leases": s.leases, "db_size": s.database_size, "version": s.server_version}),
        ),
        Err(e) => {
            let mut row = vec![config.redacted_url(), format!("unhealthy: {e}")];
            row.resize(9, "-".into());
            (
                row,
                json!({"url": config.redacted_url(), "healthy": false, "error": e.to_string()}),
            )
        }
    };
    let healthy = doc["healthy"] == true;
    output::rows(
        ctx.format,
        &[
            "DATABASE",
            "HEALTH",
            "SCHEMA",
            "ROLE",
            "REVISION",
            "COMPACTED",
            "CONTENTS",
            "DB SIZE",
            "VERSION",
        ],
        &[row],
        |_| doc.clone(),
    );
    if !healthy {
        return Err(Failure::new(
            exit::UNAVAILABLE,
            "the database did not answer",
        ));
    }
    Ok(())
}

/// Each etcd member's view.
async fn etcd_members(ctx: &Ctx, etcd: &EtcdBackend) -> Outcome {
    let members = etcd.member_status().await;
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| match &m.status {
            Ok(s) => vec![
                m.endpoint.clone(),
                "healthy".into(),
                format!("{:x}", s.member_id),
                if s.leader_id == s.member_id {
                    "yes".into()
                } else {
                    format!("{:x}", s.leader_id)
                },
                s.revision.to_string(),
                s.raft_term.to_string(),
                format!("{:.1} MiB", s.db_size as f64 / 1024.0 / 1024.0),
                s.version.clone(),
            ],
            Err(e) => vec![
                m.endpoint.clone(),
                format!("unhealthy: {e}"),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
        })
        .collect();
    output::rows(
        ctx.format,
        &[
            "ENDPOINT",
            "HEALTH",
            "MEMBER",
            "LEADER",
            "REVISION",
            "RAFT TERM",
            "DB SIZE",
            "VERSION",
        ],
        &rows,
        |i| {
            let m = &members[i];
            match &m.status {
                Ok(s) => {
                    json!({"endpoint": m.endpoint, "healthy": true, "member_id": format!("{:x}", s.member_id), "leader_id": format!("{:x}", s.leader_id), "is_leader": s.leader_id == s.member_id, "revision": s.revision, "raft_term": s.raft_term, "raft_index": s.raft_index, "db_size": s.db_size, "version": s.version})
                }
                Err(e) => json!({"endpoint": m.endpoint, "healthy": false, "error": e}),
            }
        },
    );
    if members.iter().all(|m| m.status.is_err()) {
        return Err(Failure::new(exit::UNAVAILABLE, "no endpoint answered"));
    }
    Ok(())
}
