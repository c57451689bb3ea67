//! `coordctl status`: each endpoint's view, and this process's.

use serde_json::json;

use crate::exit::{self, Failure, Outcome};
use crate::{output, Ctx};

pub async fn show(ctx: &Ctx) -> Outcome {
    let members = ctx.backend.member_status().await;
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
    if members.iter().all(|m| m.status.is_err()) {
        return Err(Failure::new(exit::UNAVAILABLE, "no endpoint answered"));
    }
    Ok(())
}
