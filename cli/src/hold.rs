//! `lock` and `elect`: take a lock or a leadership and hold it, alone or while a
//! command runs.

use std::time::Duration;

use coordkit::OwnershipLost;
use futures::StreamExt;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::{self, Failure, Outcome};
use crate::{duration, output, Ctx};

/// `coordctl lock`.
#[derive(clap::Args, Debug)]
pub struct LockArgs {
    /// The lock's name.
    name: String,
    #[command(flatten)]
    hold: HoldArgs,
}

/// `coordctl elect`.
#[derive(clap::Args, Debug)]
pub struct ElectArgs {
    /// The election's name.
    name: String,
    /// The value to proclaim while leading (default: the host name and pid).
    value: Option<String>,
    /// Print each leader change instead of campaigning.
    #[arg(long, conflicts_with_all = ["value", "command", "try_now"])]
    observe: bool,
    #[command(flatten)]
    hold: HoldArgs,
}

/// How `lock` and `elect` take and hold.
#[derive(clap::Args, Debug)]
struct HoldArgs {
    /// The session's TTL: how long the hold outlives this process if it dies.
    #[arg(long, value_parser = duration, default_value = "15s")]
    ttl: Duration,
    /// Give up (exit 4) if not held within this long.
    #[arg(long, value_parser = duration)]
    wait: Option<Duration>,
    /// Fail at once (exit 4) if someone holds it.
    #[arg(long = "try")]
    try_now: bool,
    /// After the hold is lost, how long CMD has between SIGTERM and SIGKILL.
    #[arg(long, value_parser = duration, default_value = "10s")]
    grace: Duration,
    /// The command to run while holding it.
    #[arg(last = true)]
    command: Vec<String>,
}

/// What is held: a lock guard or a leadership, with what `hold` needs of it.
enum Held {
    Lock(coordkit::LockGuard),
    Leader(coordkit::Leadership),
}

impl Held {
    fn key(&self) -> &str {
        match self {
            Held::Lock(g) => g.key(),
            Held::Leader(l) => l.key(),
        }
    }
    fn token(&self) -> i64 {
        match self {
            Held::Lock(g) => g.fencing_token(),
            Held::Leader(l) => l.fencing_token(),
        }
    }
    async fn lost(&self) -> OwnershipLost {
        match self {
            Held::Lock(g) => g.lost().await,
            Held::Leader(l) => l.lost().await,
        }
    }
    async fn release(self) -> coordkit::Result<()> {
        match self {
            Held::Lock(g) => g.unlock().await,
            Held::Leader(l) => l.resign().await,
        }
    }
}

/// Wait for `fut` (a lock or a campaign) for at most `wait`, and only until
/// SIGINT or SIGTERM: a signal while queued drops the call — coordkit's cleanup
/// removes the queued key, and the coordinator's close waits for that — and
/// exits 128 + the signal, as a shell does.
async fn within<T>(
    wait: Option<Duration>,
    what: &str,
    fut: impl std::future::Future<Output = coordkit::Result<T>>,
) -> Outcome<T> {
    let mut interrupted = signal(SignalKind::interrupt())?;
    let mut terminated = signal(SignalKind::terminate())?;
    let limited = async {
        match wait {
            None => Ok(fut.await?),
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(r) => Ok(r?),
                Err(_) => Err(Failure::new(
                    exit::CONFLICT,
                    format!(
                        "{what} not obtained within {}",
                        humantime::format_duration(limit)
                    ),
                )),
            },
        }
    };
    let stopped = |sig: Signal| {
        Failure::new(
            128u8.saturating_add(sig as u8),
            format!("{sig} while waiting for the {what}: its queued key is removed"),
        )
    };
    tokio::select! {
        r = limited => r,
        _ = interrupted.recv() => Err(stopped(Signal::SIGINT)),
        _ = terminated.recv() => Err(stopped(Signal::SIGTERM)),
    }
}

pub async fn lock(ctx: &Ctx, args: LockArgs) -> Outcome<u8> {
    let (locks, h) = (ctx.coordinator.lock(), args.hold);
    let what = format!("lock {:?}", args.name);
    let guard = if h.try_now {
        within(None, &what, locks.try_acquire(&args.name, h.ttl)).await?
    } else {
        within(h.wait, &what, locks.acquire(&args.name, h.ttl)).await?
    };
    hold(ctx, Held::Lock(guard), "COORD_LOCK_KEY", h.command, h.grace).await
}

pub async fn elect(ctx: &Ctx, args: ElectArgs) -> Outcome<u8> {
    let h = args.hold;
    let elections = ctx.coordinator.election().with_ttl(h.ttl);
    if args.observe {
        return observe(ctx, &elections, &args.name).await;
    }
    let value = args.value.unwrap_or_else(default_value);
    let what = format!("leadership of {:?}", args.name);
    let leadership = if h.try_now {
        elections
            .try_campaign(&args.name, value)
            .await
            .map_err(|e| match e {
                coordkit::Error::LockConflict { name } => Failure::new(
                    exit::CONFLICT,
                    format!("election {name:?} has a leader (or a candidate queued)"),
                ),
                e => e.into(),
            })?
    } else {
        within(h.wait, &what, elections.campaign(&args.name, value)).await?
    };
    hold(
        ctx,
        Held::Leader(leadership),
        "COORD_LEADER_KEY",
        h.command,
        h.grace,
    )
    .await
}

fn default_value() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}:{}", std::process::id())
}

async fn observe(ctx: &Ctx, elections: &coordkit::ElectionService, name: &str) -> Outcome<u8> {
    let mut changes = elections.observe(name)?;
    let mut interrupted = signal(SignalKind::interrupt())?;
    let mut terminated = signal(SignalKind::terminate())?;
    loop {
        let change = tokio::select! {
            c = changes.next() => c,
            _ = interrupted.recv() => return Ok(exit::OK),
            _ = terminated.recv() => return Ok(exit::OK),
        };
        match change {
            None => return Ok(exit::OK),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(None)) => output::record(
                ctx.format,
                &[("leader", "(none)".into())],
                json!({"election": name, "leader": null}),
            ),
            Some(Ok(Some(leader))) => output::record(
                ctx.format,
                &[
                    ("leader", leader.value_str()),
                    ("key", leader.key.clone()),
                    ("fencing_token", leader.fencing_token.to_string()),
                ],
                json!({"election": name, "leader": leader.value_str(), "key": leader.key, "fencing_token": leader.fencing_token}),
            ),
        }
    }
}

/// Hold until the command exits, a signal arrives, or the hold is lost.
async fn hold(
    ctx: &Ctx,
    held: Held,
    key_var: &str,
    command: Vec<String>,
    grace: Duration,
) -> Outcome<u8> {
    let (key, token) = (held.key().to_string(), held.token());
    let mut interrupted = signal(SignalKind::interrupt())?;
    let mut terminated = signal(SignalKind::terminate())?;
    if command.is_empty() {
        output::record(
            ctx.format,
            &[("key", key.clone()), ("fencing_token", token.to_string())],
            json!({"key": key, "fencing_token": token}),
        );
        let lost = tokio::select! {
            why = held.lost() => Some(why),
            _ = interrupted.recv() => None,
            _ = terminated.recv() => None,
        };
        return match lost {
            Some(why) => Err(Failure::new(exit::LOST, format!("{key} lost: {why:?}"))),
            None => {
                held.release().await?;
                Ok(exit::OK)
            }
        };
    }
    // CMD leads a process group of its own, and every signal goes to the whole
    // group: `sh -c '…'`'s children stop with it when the hold is lost.
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env(key_var, &key)
        .env("COORD_FENCING_TOKEN", token.to_string())
        .process_group(0)
        .spawn()
        .map_err(|e| Failure::bad_input(format!("cannot run {:?}: {e}", command[0])))?;
    let group = child.id().map(|p| Pid::from_raw(p as i32));
    let forward = |sig: Signal| {
        if let Some(group) = group {
            let _ = killpg(group, sig);
        }
    };
    let outcome = loop {
        tokio::select! {
            status = child.wait() => break Ok(status?),
            why = held.lost() => break Err(why),
            _ = interrupted.recv() => forward(Signal::SIGINT),
            _ = terminated.recv() => forward(Signal::SIGTERM),
        }
    };
    match outcome {
        Ok(status) => {
            // CMD ran: its status is the exit code. A failed release (the key
            // then goes with the session, which the close revokes) is said on
            // stderr, not in the code, so a wrapper does not run the job again.
            if let Err(e) = held.release().await {
                eprintln!(
                    "coordctl: {key}: the release after {:?} failed: {e}",
                    command[0]
                );
            }
            // Whatever CMD left running in its group goes too.
            forward(Signal::SIGTERM);
            Ok(exit_code(status))
        }
        Err(why) => {
            forward(Signal::SIGTERM);
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                forward(Signal::SIGKILL);
                let _ = child.wait().await;
            }
            // The group's other members get the grace too, then SIGKILL.
            let group_gone = || group.is_none_or(|g| killpg(g, None).is_err());
            let deadline = tokio::time::Instant::now() + grace;
            while !group_gone() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            forward(Signal::SIGKILL);
            Err(Failure::new(
                exit::LOST,
                format!(
                    "{key} lost ({why:?}) while {:?} ran: it was stopped",
                    command[0]
                ),
            ))
        }
    }
}

/// The command's status as an exit code: its code, or 128 + its signal.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        _ => exit::FAILED,
    }
}
