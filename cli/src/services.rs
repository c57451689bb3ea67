//! `services`, `service`, `register`, `deregister`.

use std::time::Duration;

use coordkit::{Backend, Error, ServiceEventKind, ServiceInfo};
use futures::StreamExt;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::{self, Failure, Outcome};
use crate::{duration, output, Ctx};

/// `coordctl service`.
#[derive(clap::Args, Debug)]
pub struct ServiceArgs {
    /// The service's name.
    name: String,
    /// After listing the instances, print each change as it happens.
    #[arg(long)]
    watch: bool,
}

/// `coordctl register`.
#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// The service's name.
    name: String,
    /// The instance's id, unique in the service.
    id: String,
    /// The address it serves on.
    address: String,
    /// The port it serves on.
    port: u16,
    /// Metadata, `key=value`; repeat for more.
    #[arg(long = "meta", value_parser = key_value)]
    meta: Vec<(String, String)>,
    /// A tag; repeat for more.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// The relative share of traffic under weighted picking (0 drains it).
    #[arg(long, default_value_t = 1)]
    weight: u32,
    /// The registration's TTL: how long it outlives this process if it dies.
    #[arg(long, value_parser = duration, default_value = "10s")]
    ttl: Duration,
    /// Register without a lease and exit at once: the instance stays until
    /// `coordctl deregister` (for a database, a legacy host, an external
    /// endpoint that runs no client).
    #[arg(long, conflicts_with = "ttl")]
    persistent: bool,
}

/// `coordctl deregister`.
#[derive(clap::Args, Debug)]
pub struct DeregisterArgs {
    /// The service's name.
    name: String,
    /// The instance's id.
    id: String,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

fn segment(what: &str, value: &str) -> Outcome {
    if value.is_empty() || value.contains('/') || value.chars().any(char::is_control) {
        return Err(Failure::bad_input(format!(
            "invalid {what} {value:?}: must be non-empty, without '/' or control characters"
        )));
    }
    Ok(())
}

pub async fn list(ctx: &Ctx) -> Outcome {
    let list = ctx.coordinator.registry().services().await?;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|(n, c)| vec![n.clone(), c.to_string()])
        .collect();
    output::rows(
        ctx.format,
        &["SERVICE", "INSTANCES"],
        &rows,
        |i| json!({"service": list[i].0, "instances": list[i].1}),
    );
    Ok(())
}

fn meta(info: &ServiceInfo) -> String {
    info.metadata
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn show(ctx: &Ctx, args: ServiceArgs) -> Outcome {
    segment("service name", &args.name)?;
    // Each instance as every read shows it: a prober's verdict folded in.
    let targets = ctx.coordinator.registry().probe_targets(&args.name).await?;
    let mut instances = Vec::new();
    for t in &targets {
        let ttl = match t.lease {
            Some(l) => ctx
                .backend
                .lease_time_to_live(l)
                .await
                .ok()
                .map(|i| i.remaining_ttl),
            None => None,
        };
        instances.push((t.as_read(), ttl));
    }
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|(i, ttl)| {
            vec![
                i.id.clone(),
                i.address.clone(),
                i.port.to_string(),
                format!("{:?}", i.health).to_lowercase(),
                i.weight.to_string(),
                i.tags.iter().cloned().collect::<Vec<_>>().join(","),
                meta(i),
                ttl.map_or("-".into(), |t| format!("{t}s")),
            ]
        })
        .collect();
    output::rows(
        ctx.format,
        &[
            "ID", "ADDRESS", "PORT", "HEALTH", "WEIGHT", "TAGS", "METADATA", "TTL LEFT",
        ],
        &rows,
        |i| {
            let (info, ttl) = &instances[i];
            json!({"service": info.name, "id": info.id, "address": info.address, "port": info.port, "health": info.health, "probe": info.probe, "weight": info.weight, "tags": info.tags, "metadata": info.metadata, "ttl_left_secs": ttl})
        },
    );
    if !args.watch {
        return Ok(());
    }
    let mut events = ctx.coordinator.registry().watch(&args.name).await?;
    let mut interrupted = signal(SignalKind::interrupt())?;
    let mut terminated = signal(SignalKind::terminate())?;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = interrupted.recv() => return Ok(()),
            _ = terminated.recv() => return Ok(()),
        };
        let Some(event) = event else { return Ok(()) };
        let event = event?;
        let kind = match event.kind {
            ServiceEventKind::Put => "up",
            ServiceEventKind::Delete => "down",
            _ => "changed",
        };
        let i = &event.service;
        match ctx.format {
            output::Format::Json => println!(
                "{}",
                json!({"event": kind, "service": i.name, "id": i.id, "address": i.address, "port": i.port, "metadata": i.metadata})
            ),
            output::Format::Table => {
                println!("{kind:<4}  {}  {}  {}", i.id, i.authority(), meta(i))
            }
        }
    }
}

pub async fn register(ctx: &Ctx, args: RegisterArgs) -> Outcome<u8> {
    let mut info =
        ServiceInfo::new(&args.id, &args.name, &args.address, args.port).with_weight(args.weight);
    info.tags.extend(args.tags);
    for (k, v) in args.meta {
        info = info.with_metadata(k, v);
    }
    if args.persistent {
        let key = ctx.keys.instance(&info.name, &info.id);
        let revision = ctx.coordinator.registry().register_persistent(info).await?;
        output::record(
            ctx.format,
            &[
                ("registered", key.clone()),
                ("persistent", "yes".into()),
                ("revision", revision.to_string()),
            ],
            json!({"registered": key, "persistent": true, "revision": revision}),
        );
        return Ok(exit::OK);
    }
    let registration = ctx.coordinator.registry().register(info, args.ttl).await?;
    let key = registration.key().to_string();
    output::record(
        ctx.format,
        &[("registered", key.clone())],
        json!({"registered": key}),
    );
    let mut interrupted = signal(SignalKind::interrupt())?;
    let mut terminated = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupted.recv() => {}
        _ = terminated.recv() => {}
    }
    registration.deregister().await?;
    Ok(exit::OK)
}

pub async fn deregister(ctx: &Ctx, args: DeregisterArgs) -> Outcome {
    segment("service name", &args.name)?;
    segment("instance id", &args.id)?;
    let key = ctx.keys.instance(&args.name, &args.id);
    // The instance and its entry in the id index, in one transaction.
    let index = ctx.keys.id_index_entry(&args.id, &args.name);
    let backend: &dyn Backend = ctx.backend.as_ref();
    let txn = coordkit::Txn::new().and_then([
        coordkit::DeleteRequest::key(key.clone()),
        coordkit::DeleteRequest::key(index),
        coordkit::DeleteRequest::key(ctx.keys.probe_verdict(&args.name, &args.id)),
    ]);
    let deleted = backend.txn(txn).await?.responses.first().is_some_and(
        |r| matches!(r, coordkit::TxnOpResponse::Delete { deleted, .. } if *deleted > 0),
    );
    if !deleted {
        return Err(Error::NotFound { key }.into());
    }
    output::record(
        ctx.format,
        &[("deregistered", key.clone())],
        json!({"deregistered": key}),
    );
    Ok(())
}
