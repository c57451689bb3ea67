//! `coordctl`: the command line for coordkit's locks, elections, services and
//! config on etcd or PostgreSQL, built on the library alone.
//!
//! Every command takes the connection flags (`--endpoints` or
//! `COORD_ETCD_ENDPOINTS`, or `--postgres-url` or `COORD_POSTGRES_URL`;
//! `--namespace`, `--user`/`--password`, TLS files, `--timeout`) and `-o json`
//! for one JSON document per line. Exit codes are
//! listed by `coordctl --help` (see `exit.rs`).

mod config;
mod console;
mod diff;
mod exit;
mod gray;
mod hold;
mod output;
mod probe;
mod queue;
mod services;
mod status;
mod store;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use coordkit::Coordinator;
use coordkit_etcd::{EtcdBackend, EtcdConfig};
use coordkit_postgres::{PostgresBackend, PostgresConfig};

use crate::exit::{Failure, Outcome};
use crate::output::Format;

fn duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10s, 500ms, 2m)"))
}

/// Locks, elections, services and config on etcd or PostgreSQL, with
/// coordkit's rules.
#[derive(Parser, Debug)]
#[command(name = "coordctl", version, after_help = exit::TABLE)]
struct Cli {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "COORD_ETCD_ENDPOINTS",
        value_delimiter = ',',
        global = true
    )]
    endpoints: Vec<String>,
    /// A PostgreSQL URL (postgres://user:password@host:port/db) instead of
    /// etcd. Given with --endpoints, the one passed as a flag wins over the one
    /// from the environment; two flags, or two variables, are refused.
    #[arg(
        long,
        env = "COORD_POSTGRES_URL",
        hide_env_values = true,
        global = true
    )]
    postgres_url: Option<String>,
    /// The Postgres schema holding coordkit's tables.
    #[arg(long, default_value = "coordkit", global = true)]
    postgres_schema: String,
    /// The key namespace coordkit's recipes live under.
    #[arg(long, default_value = coordkit::DEFAULT_NAMESPACE, global = true)]
    namespace: String,
    /// etcd user name.
    #[arg(long, env = "COORD_ETCD_USER", global = true)]
    user: Option<String>,
    /// etcd password (prefer the environment variable: never echoed).
    #[arg(
        long,
        env = "COORD_ETCD_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    password: Option<String>,
    /// PEM file of the CA that signed etcd's certificate (turns TLS on).
    #[arg(long, global = true)]
    cacert: Option<PathBuf>,
    /// PEM client certificate, for client-certificate authentication.
    #[arg(long = "cert", requires = "tls_key", global = true)]
    tls_cert: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(long = "key", requires = "tls_cert", global = true)]
    tls_key: Option<PathBuf>,
    /// How long one request to the store may take.
    #[arg(long, value_parser = duration, default_value = "5s", global = true)]
    timeout: Duration,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Acquire lock NAME and hold it: with `-- CMD`, run CMD while holding it
    /// (COORD_LOCK_KEY and COORD_FENCING_TOKEN in its environment) and exit
    /// with its status; without, print the key and token and hold until
    /// SIGINT/SIGTERM. If the lock is lost, CMD gets SIGTERM (SIGKILL after
    /// --grace) and coordctl exits with code 5.
    #[command(after_help = "Example: coordctl lock nightly-report --ttl 15s -- ./report.sh")]
    Lock(hold::LockArgs),
    /// Campaign in election NAME and hold the leadership (as `lock`), or with
    /// --observe print each leader change.
    #[command(
        after_help = "Examples: coordctl elect scheduler node-a -- ./run-scheduler\n          coordctl elect scheduler --observe -o json"
    )]
    Elect(hold::ElectArgs),
    /// Locks: names with their queue length, or NAME's holder and waiters in
    /// order (token, lease time left). Reads `etcdctl lock` queues too.
    #[command(after_help = "Example: coordctl locks nightly-report")]
    Locks(queue::QueueArgs),
    /// Elections: names, or NAME's leader and candidates in order.
    #[command(after_help = "Example: coordctl elections scheduler -o json")]
    Elections(queue::QueueArgs),
    /// Service names with their instance counts.
    #[command(after_help = "Example: coordctl services")]
    Services,
    /// The instances of service NAME (address, port, metadata, lease TTL
    /// left); --watch prints each change after.
    #[command(after_help = "Example: coordctl service api --watch -o json")]
    Service(services::ServiceArgs),
    /// Register an instance and keep it registered until SIGINT/SIGTERM; with
    /// --persistent, register it without a lease and exit (it stays until
    /// `deregister`).
    #[command(
        after_help = "Examples: coordctl register api api-1 10.0.0.5 8080 --meta zone=a --ttl 10s\n          coordctl register db db-1 10.0.0.9 5432 --persistent"
    )]
    Register(services::RegisterArgs),
    /// Check the instances of services from outside (HTTP, TCP, gRPC health)
    /// and record their health, until SIGINT/SIGTERM; one prober of a service
    /// set is active, the others take over when it goes.
    #[command(
        after_help = "Example: coordctl probe api=http:/healthz db=tcp --interval 5s --fall 3 --remove-after 10m"
    )]
    Probe(probe::ProbeArgs),
    /// Remove instance ID of service NAME.
    #[command(after_help = "Example: coordctl deregister api api-1")]
    Deregister(services::DeregisterArgs),
    /// The config center: get, set, delete, list, watch, history, rollback, diff.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Each endpoint's health, leader, revision, raft term and database size,
    /// and this process's view.
    #[command(
        after_help = "Example: coordctl status --endpoints http://10.0.0.1:2379,http://10.0.0.2:2379"
    )]
    Status,
    /// Serve the web console (services, config, locks, cluster) on
    /// 127.0.0.1 until SIGINT/SIGTERM; prints the address to open once.
    #[command(after_help = "Example: coordctl console --listen 127.0.0.1:8090 --read-only")]
    Console(console::ConsoleArgs),
    /// Print a shell completion script.
    #[command(after_help = "Example: coordctl completions bash > /etc/bash_completion.d/coordctl")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// What every command gets: the store, a coordinator on it, the output format.
pub struct Ctx {
    pub backend: Arc<dyn coordkit::Backend>,
    pub store: store::Store,
    pub coordinator: Coordinator,
    pub keys: coordkit::KeyLayout,
    pub format: Format,
}

impl Cli {
    fn config(&self) -> Outcome<EtcdConfig> {
        if self.endpoints.iter().all(|e| e.trim().is_empty()) {
            return Err(Failure::bad_input(
                "no store: pass --endpoints (or set COORD_ETCD_ENDPOINTS) for etcd, or \
                 --postgres-url (or COORD_POSTGRES_URL) for PostgreSQL",
            ));
        }
        let mut config =
            EtcdConfig::with_endpoints(self.endpoints.iter().map(|e| e.trim().to_string()));
        config.request_timeout = self.timeout;
        config.connect_timeout = self.timeout;
        config.username = self.user.clone();
        config.password = self.password.clone();
        if self.user.is_some() != self.password.is_some() {
            return Err(Failure::bad_input("--user and --password go together"));
        }
        if self.cacert.is_some() || self.tls_cert.is_some() {
            let read = |p: &PathBuf| {
                std::fs::read(p)
                    .map_err(|e| Failure::bad_input(format!("cannot read {}: {e}", p.display())))
            };
            let mut tls = coordkit_etcd::TlsOptions::new();
            if let Some(ca) = &self.cacert {
                tls = tls.ca_certificate(coordkit_etcd::Certificate::from_pem(read(ca)?));
            }
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls = tls.identity(coordkit_etcd::Identity::from_pem(read(cert)?, read(key)?));
            }
            config.tls = Some(tls);
        }
        Ok(config)
    }

    /// Whether the store is Postgres: a URL given and no etcd endpoints, or
    /// both given and the URL the one passed as a flag.
    fn uses_postgres(&self, matches: &ArgMatches) -> Outcome<bool> {
        let url = self
            .postgres_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty());
        let etcd = self.endpoints.iter().any(|e| !e.trim().is_empty());
        if !(url && etcd) {
            return Ok(url);
        }
        let flag = |id| matches.value_source(id) == Some(ValueSource::CommandLine);
        match (flag("postgres_url"), flag("endpoints")) {
            (true, false) => Ok(true),
            (false, true) => Ok(false),
            _ => Err(Failure::bad_input(
                "both etcd endpoints and a Postgres URL are given: pass one (a flag wins over \
                 an environment variable)",
            )),
        }
    }

    async fn connect(&self, matches: &ArgMatches) -> Outcome<Ctx> {
        let store = if self.uses_postgres(matches)? {
            let url = self.postgres_url.clone().unwrap_or_default();
            let config = PostgresConfig::new(url)
                .with_schema(self.postgres_schema.clone())
                .with_pool_size(4)
                .with_request_timeout(self.timeout);
            store::Store::Postgres(Arc::new(PostgresBackend::connect(config).await?))
        } else {
            store::Store::Etcd(Arc::new(EtcdBackend::connect(self.config()?).await?))
        };
        let backend = store.backend();
        let coordinator = Coordinator::builder(backend.clone())
            .namespace(self.namespace.clone())
            .build()?;
        Ok(Ctx {
            backend,
            store,
            keys: coordinator.keys().clone(),
            coordinator,
            format: self.output,
        })
    }
}

async fn run(cli: Cli, matches: ArgMatches) -> Outcome<u8> {
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "coordctl",
            &mut std::io::stdout(),
        );
        return Ok(exit::OK);
    }
    let ctx = cli.connect(&matches).await?;
    let outcome = dispatch(&ctx, cli.command).await;
    // Always: a cancelled wait (--wait, a signal) leaves a key that the close
    // removes, and held sessions are revoked rather than left to their TTL.
    let _ = ctx.coordinator.close().await;
    outcome
}

async fn dispatch(ctx: &Ctx, command: Command) -> Outcome<u8> {
    let code = match command {
        Command::Lock(args) => hold::lock(ctx, args).await?,
        Command::Elect(args) => hold::elect(ctx, args).await?,
        Command::Locks(args) => queue::show(ctx, queue::Of::Locks, args)
            .await
            .map(|()| exit::OK)?,
        Command::Elections(args) => queue::show(ctx, queue::Of::Elections, args)
            .await
            .map(|()| exit::OK)?,
        Command::Services => services::list(ctx).await.map(|()| exit::OK)?,
        Command::Service(args) => services::show(ctx, args).await.map(|()| exit::OK)?,
        Command::Register(args) => services::register(ctx, args).await?,
        Command::Probe(args) => probe::run(ctx, args).await?,
        Command::Deregister(args) => services::deregister(ctx, args).await.map(|()| exit::OK)?,
        Command::Config(command) => config::run(ctx, command).await.map(|()| exit::OK)?,
        Command::Status => status::show(ctx).await.map(|()| exit::OK)?,
        Command::Console(args) => console::run(ctx, args).await?,
        Command::Completions { .. } => exit::OK,
    };
    Ok(code)
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return Failure::new(exit::FAILED, format!("cannot start: {e}")).report(),
    };
    match runtime.block_on(run(cli, matches)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => failure.report(),
    }
}
