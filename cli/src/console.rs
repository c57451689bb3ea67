//! `coordctl console`: the web console (coordkit-console) on the store this
//! command was given, until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use coordkit_console::{ClusterReport, ClusterView, Console, ConsoleOptions, Member, MemberStatus};
use futures::future::BoxFuture;
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::{self, Failure, Outcome};
use crate::store::Store;
use crate::{output, Ctx};

/// Where and how the console runs.
#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    /// The address to listen on (port 0: any free port). Only loopback
    /// addresses unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Refuse every change on the server (pages show no forms).
    #[arg(long)]
    read_only: bool,
    /// A file whose first line is a fixed access token (at least 16
    /// characters); default: a random token per run, printed once.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Listen on a non-loopback address. The console speaks plain HTTP: put it
    /// behind a TLS proxy, and give that proxy's host name with --allow-host.
    #[arg(long)]
    allow_remote: bool,
    /// Also accept requests for this host name with its port (what a browser
    /// sends in `Host`, e.g. console.example:443); repeatable.
    #[arg(long = "allow-host", value_name = "HOST:PORT")]
    allow_hosts: Vec<String>,
}

/// Serve the console until SIGINT or SIGTERM.
pub async fn run(ctx: &Ctx, args: ConsoleArgs) -> Outcome<u8> {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        return Err(Failure::bad_input(format!(
            "{} is not a loopback address: pass --allow-remote to listen there (and put a TLS \
             proxy in front)",
            args.listen
        )));
    }
    let mut options = ConsoleOptions::new()
        .read_only(args.read_only)
        .cluster(Arc::new(StoreView(ctx.store.clone())));
    if let Some(path) = &args.token_file {
        options = options.token(read_token(path)?);
    }
    for host in &args.allow_hosts {
        options = options.allow_host(host.clone());
    }
    let console = Console::new(ctx.coordinator.clone(), options)
        .map_err(|e| Failure::bad_input(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::bad_input(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::new(exit::FAILED, format!("no local address: {e}")))?;
    announce(
        ctx,
        &console,
        local,
        args.token_file.is_some(),
        args.read_only,
    );
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot watch SIGTERM: {e}")))?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    console
        .serve(listener, shutdown)
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("the console stopped: {e}")))?;
    Ok(exit::OK)
}

/// The token in the first line of `path`.
fn read_token(path: &PathBuf) -> Outcome<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::bad_input(format!("cannot read {}: {e}", path.display())))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// Say where the console is, once: with a random token, the login address
/// (which holds it); with a token file, the address without it.
fn announce(ctx: &Ctx, console: &Console, local: SocketAddr, fixed: bool, read_only: bool) {
    let login = if fixed {
        format!("http://{local}/login?token=<the token in --token-file>")
    } else {
        format!("http://{local}{}", console.login_path())
    };
    match ctx.format {
        output::Format::Json => println!(
            "{}",
            json!({"listen": local.to_string(), "login": login, "read_only": read_only})
        ),
        output::Format::Table => {
            let mode = if read_only { " (read-only)" } else { "" };
            println!("console{mode}: {login}");
        }
    }
}

/// The Cluster page's view of the store: what `coordctl status` shows.
struct StoreView(Store);

impl ClusterView for StoreView {
    fn report(&self) -> BoxFuture<'_, ClusterReport> {
        Box::pin(async move {
            match &self.0 {
                Store::Etcd(etcd) => {
                    let members = etcd.member_status().await;
                    let members = members
                        .into_iter()
                        .map(|m| {
                            let status = m.status.map(|s| {
                                let mut status = MemberStatus::default();
                                status.id = format!("{:x}", s.member_id);
                                status.leader = s.leader_id == s.member_id;
                                status.revision = s.revision;
                                status.db_size = u64::try_from(s.db_size).unwrap_or(0);
                                status.version = s.version.clone();
                                status.detail =
                                    format!("raft term {}, index {}", s.raft_term, s.raft_index);
                                status
                            });
                            Member::new(m.endpoint, status)
                        })
                        .collect();
                    ClusterReport::new("etcd", members)
                }
                Store::Postgres(pg) => {
                    let config = pg.config();
                    let status = pg.status().await.map_err(|e| e.to_string()).map(|s| {
                        let mut status = MemberStatus::default();
                        status.id = config.schema().to_string();
                        status.leader = !s.in_recovery;
                        status.revision = s.revision;
                        status.db_size = u64::try_from(s.database_size).unwrap_or(0);
                        status.version = s.server_version.clone();
                        status.detail = format!(
                            "compacted at {}; {} keys, {} history rows, {} leases",
                            s.compacted, s.keys, s.history_rows, s.leases
                        );
                        status
                    });
                    ClusterReport::new(
                        "PostgreSQL",
                        vec![Member::new(config.redacted_url(), status)],
                    )
                }
            }
        })
    }
}
