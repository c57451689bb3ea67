//! `locks` and `elections`: names with their queues, or one queue in order.

use std::collections::BTreeMap;

use coordkit::{BackendExt, QueueEntry};
use serde_json::json;

use crate::exit::Outcome;
use crate::{output, Ctx};

/// Which queues.
#[derive(Clone, Copy)]
pub enum Of {
    Locks,
    Elections,
}

/// `coordctl locks` / `coordctl elections`.
#[derive(clap::Args, Debug)]
pub struct QueueArgs {
    /// Show this name's queue; without it, list the names.
    name: Option<String>,
}

pub async fn show(ctx: &Ctx, of: Of, args: QueueArgs) -> Outcome {
    let Some(name) = args.name else {
        return names(ctx, of).await;
    };
    let entries = match of {
        Of::Locks => ctx.coordinator.lock().holders_and_waiters(&name).await?,
        Of::Elections => {
            ctx.coordinator
                .election()
                .holders_and_waiters(&name)
                .await?
        }
    };
    let role = |i: usize| if i == 0 { "holder" } else { "waiting" };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                role(i).to_string(),
                e.key.clone(),
                e.fencing_token.to_string(),
                ttl(e),
                String::from_utf8_lossy(&e.value).into_owned(),
            ]
        })
        .collect();
    output::rows(
        ctx.format,
        &["ROLE", "KEY", "TOKEN", "TTL LEFT", "VALUE"],
        &rows,
        |i| {
            let e = &entries[i];
            json!({
                "name": name,
                "position": i,
                "role": role(i),
                "key": e.key,
                "fencing_token": e.fencing_token,
                "lease": e.lease.map(|l| l.to_string()),
                "ttl_left_secs": e.ttl_left.map(|d| d.as_secs()),
                "value": String::from_utf8_lossy(&e.value),
            })
        },
    );
    Ok(())
}

fn ttl(e: &QueueEntry) -> String {
    e.ttl_left
        .map_or("-".into(), |d| format!("{}s", d.as_secs()))
}

async fn names(ctx: &Ctx, of: Of) -> Outcome {
    let prefix = match of {
        Of::Locks => ctx.keys.locks(),
        Of::Elections => ctx.keys.elections(),
    };
    let kvs = ctx.backend.get_prefix(prefix.clone()).await?;
    let mut queues: BTreeMap<String, usize> = BTreeMap::new();
    for kv in &kvs {
        let key = kv.key_str();
        if let Some((name, _)) = key[prefix.len()..].split_once('/') {
            *queues.entry(name.to_string()).or_default() += 1;
        }
    }
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|(n, c)| vec![n.clone(), c.to_string()])
        .collect();
    let list: Vec<_> = queues.iter().collect();
    output::rows(
        ctx.format,
        &["NAME", "QUEUED"],
        &rows,
        |i| json!({"name": list[i].0, "queued": list[i].1}),
    );
    Ok(())
}
