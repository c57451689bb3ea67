//! `coordctl probe`: check the instances of services from outside and record
//! verdicts, one active prober per service set, until SIGINT/SIGTERM.

use std::time::Duration;

use coordkit::{Check, ProberConfig, ProberEvent};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::{self, Failure, Outcome};
use crate::{duration, output, Ctx};

/// `coordctl probe`.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// SERVICE=CHECK, CHECK one of `tcp`, `http`, `http:/PATH`, `grpc`,
    /// `grpc:SERVICE`; repeat for more services.
    #[arg(required = true, value_parser = service_check)]
    services: Vec<(String, Check)>,
    /// The prober's name, written in its verdicts (default: `coordctl-<pid>`).
    #[arg(long)]
    name: Option<String>,
    /// The group whose probers take turns (default: the services, sorted,
    /// joined by `+`).
    #[arg(long)]
    group: Option<String>,
    /// How often each instance is checked.
    #[arg(long, value_parser = duration, default_value = "5s")]
    interval: Duration,
    /// How long a check may take.
    #[arg(long, value_parser = duration, default_value = "2s")]
    timeout: Duration,
    /// Passed checks in a row before an instance is passing again.
    #[arg(long, default_value_t = 2)]
    rise: u32,
    /// Failed checks in a row before an instance is critical.
    #[arg(long, default_value_t = 3)]
    fall: u32,
    /// Remove a persistent instance critical for this long.
    #[arg(long, value_parser = duration)]
    remove_after: Option<Duration>,
    /// The prober's session TTL: how long a prober that dies stays active
    /// before another takes over.
    #[arg(long, value_parser = duration, default_value = "10s")]
    ttl: Duration,
}

fn service_check(s: &str) -> Result<(String, Check), String> {
    let (service, check) = s
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=CHECK, got {s:?}"))?;
    let check = check.parse::<Check>().map_err(|e| e.to_string())?;
    Ok((service.to_string(), check))
}

pub async fn run(ctx: &Ctx, args: ProbeArgs) -> Outcome<u8> {
    let name = args
        .name
        .unwrap_or_else(|| format!("coordctl-{}", std::process::id()));
    let mut config = ProberConfig::new(name)
        .interval(args.interval)
        .timeout(args.timeout)
        .thresholds(args.rise, args.fall)
        .session_ttl(args.ttl);
    for (service, check) in args.services {
        config = config.service(service, check);
    }
    if let Some(group) = args.group {
        config = config.with_group(group);
    }
    if let Some(after) = args.remove_after {
        config = config.remove_after(after);
    }
    let group = config.group();
    let prober = ctx.coordinator.registry().prober(config)?;
    let mut events = prober.events();
    output::record(
        ctx.format,
        &[("probing", group.clone())],
        json!({"probing": group}),
    );
    let mut interrupted = signal(SignalKind::interrupt())?;
    let mut terminated = signal(SignalKind::terminate())?;
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = interrupted.recv() => break,
            _ = terminated.recv() => break,
        };
        match event {
            Ok(e) => print(ctx.format, &e),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                eprintln!("coordctl: {n} prober events not shown (output too slow)")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return Err(Failure::from(coordkit::Error::Closed {
                    what: "the prober",
                }))
            }
        }
    }
    prober.close().await;
    Ok(exit::OK)
}

fn print(format: output::Format, event: &ProberEvent) {
    let (line, value) = match event {
        ProberEvent::Active { fencing_token } => (
            format!("active    fencing token {fencing_token}"),
            json!({"event": "active", "fencing_token": fencing_token}),
        ),
        ProberEvent::Standby => ("standby".to_string(), json!({"event": "standby"})),
        ProberEvent::Verdict {
            service,
            id,
            health,
            detail,
        } => {
            let health = format!("{health:?}").to_lowercase();
            (
                format!("verdict   {service}/{id} {health} ({detail})"),
                json!({"event": "verdict", "service": service, "id": id, "health": health, "detail": detail}),
            )
        }
        ProberEvent::Removed { service, id } => (
            format!("removed   {service}/{id}"),
            json!({"event": "removed", "service": service, "id": id}),
        ),
        ProberEvent::Failed { error } => (
            format!("failed    {error}"),
            json!({"event": "failed", "error": error}),
        ),
        other => (format!("{other:?}"), json!({"event": format!("{other:?}")})),
    };
    match format {
        output::Format::Json => println!("{value}"),
        output::Format::Table => println!("{line}"),
    }
}
