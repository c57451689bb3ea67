//! A web console for coordkit: services, config, locks and the cluster in a
//! browser, live, with every edit a compare-and-set on what the page showed.
//!
//! `coordctl console` serves it; [`Console`] serves it from any program with a
//! [`Coordinator`] (any backend). Pages are rendered on the server; a small
//! script (embedded, as is the style sheet: nothing to deploy) counts lease time
//! down and replaces live parts with what the server sends over server-sent
//! events, which are fed by watches of the store — the console never polls it.
//!
//! # Security
//! - **Access**: every route answers 401 without the session cookie, which
//!   `/login?token=…` gives in exchange for the console's token (random per
//!   run unless [`ConsoleOptions::token`] sets one). The cookie is `HttpOnly;
//!   SameSite=Strict`.
//! - **Requests from elsewhere**: a `Host` header not in the allow-list is
//!   refused (against DNS rebinding). Every mutation is a `POST` of a form
//!   (`application/x-www-form-urlencoded`, nothing else), carries the page's
//!   CSRF token, and comes from this origin (`Origin`, or `Sec-Fetch-Site:
//!   same-origin` when a browser sends no `Origin`).
//! - **Read-only** ([`ConsoleOptions::read_only`]): every `POST` is refused
//!   by the server before any handler runs, whatever the page shows.
//! - **Edits** compare on the version (or revision) the page was rendered
//!   with: a change made behind the page fails and changes nothing. Each
//!   mutation is logged through `tracing` (target `coordkit_console`): what,
//!   which key, which version.
//! - **Rendering**: keys and values are escaped (markup renders inert), values
//!   that are not UTF-8 are shown as hex; every response carries a strict
//!   Content-Security-Policy (no inline script), `nosniff`, `no-store` and
//!   `Referrer-Policy: same-origin`.
//!
//! The console speaks plain HTTP: beyond loopback, put it behind a TLS proxy.
//!
//! ```no_run
//! # async fn run(coordinator: coordkit::Coordinator) -> std::io::Result<()> {
//! use coordkit_console::{Console, ConsoleOptions};
//!
//! let console = Console::new(coordinator, ConsoleOptions::new()).expect("options");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! println!("http://{}{}", listener.local_addr()?, console.login_path());
//! console.serve(listener, std::future::pending()).await
//! # }
//! ```

mod access;
mod cluster;
mod config;
mod failure;
mod live;
mod page;
mod queues;
mod services;
mod values;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use coordkit::{Backend, ConfigCenter, Coordinator, KeyLayout};

pub use cluster::{ClusterReport, ClusterView, Member, MemberStatus};

/// How a [`Console`] runs.
#[derive(Clone, Default)]
pub struct ConsoleOptions {
    read_only: bool,
    token: Option<String>,
    hosts: Vec<String>,
    cluster: Option<Arc<dyn ClusterView>>,
}

impl ConsoleOptions {
    /// Writable, a random token, loopback host names only, no cluster view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuse every mutation on the server (the pages hide their forms too).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// A fixed access token (at least 16 characters, no whitespace) instead of
    /// a random one.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Also accept requests whose `Host` header is `host` (with its port, as
    /// a browser sends it: `console.example:8080`). Loopback names with the
    /// listening port are always accepted.
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// What the Cluster page shows of the store's members (`coordctl console`
    /// gives etcd's or Postgres's status); without it, the page shows the
    /// store's revision and this process's health.
    pub fn cluster(mut self, view: Arc<dyn ClusterView>) -> Self {
        self.cluster = Some(view);
        self
    }
}

/// Why a [`Console`] could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The token given is too short or has whitespace.
    BadToken(String),
    /// No random token could be made (the system's random source failed).
    Random(String),
}

impl std::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsoleError::BadToken(why) => write!(f, "bad console token: {why}"),
            ConsoleError::Random(why) => write!(f, "no random token: {why}"),
        }
    }
}

impl std::error::Error for ConsoleError {}

/// The console: a router to serve, and its access token.
#[derive(Clone)]
pub struct Console {
    shared: Shared,
    hosts: Vec<String>,
}

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Inner>);

pub(crate) struct Inner {
    pub coordinator: Coordinator,
    pub config: ConfigCenter,
    pub access: access::Access,
    pub read_only: bool,
    pub cluster: Option<Arc<dyn ClusterView>>,
    /// How live parts wait between failed watches.
    pub retry: coordkit::RetryPolicy,
    /// Set when the server shuts down: live parts end.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl std::ops::Deref for Shared {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    pub fn backend(&self) -> &Arc<dyn Backend> {
        self.coordinator.backend()
    }

    pub fn keys(&self) -> &KeyLayout {
        self.coordinator.keys()
    }
}

impl Console {
    /// A console on `coordinator`'s store and namespace.
    pub fn new(coordinator: Coordinator, options: ConsoleOptions) -> Result<Self, ConsoleError> {
        let access = access::Access::new(options.token)?;
        let shared = Shared(Arc::new(Inner {
            config: coordinator.config(),
            coordinator,
            access,
            read_only: options.read_only,
            cluster: options.cluster,
            retry: coordkit::RetryPolicy::default(),
            closing: tokio::sync::watch::Sender::new(false),
        }));
        Ok(Console {
            shared,
            hosts: options.hosts,
        })
    }

    /// The access token (give it to the operator once; it opens every page).
    pub fn token(&self) -> &str {
        self.shared.access.token()
    }

    /// The path that exchanges the token for the session cookie:
    /// `/login?token=…`.
    pub fn login_path(&self) -> String {
        format!("/login?token={}", self.token())
    }

    /// Every route, for a server listening on `local`: its `Host` allow-list
    /// is `localhost`, `127.0.0.1` and `[::1]` with `local`'s port, `local`
    /// itself, and the hosts of [`ConsoleOptions::allow_host`].
    pub fn router(&self, local: SocketAddr) -> Router {
        let port = local.port();
        let mut hosts = vec![
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
            local.to_string(),
        ];
        hosts.extend(self.hosts.iter().cloned());
        let guard = access::Guard::new(self.shared.clone(), hosts);
        Router::new()
            .route("/", get(services::index))
            .route("/assets/{name}", get(page::asset))
            .route("/services", get(services::index))
            .route("/services/{name}", get(services::service))
            .route(
                "/services/{name}/{id}/deregister",
                get(services::confirm_deregister).post(services::deregister),
            )
            .route("/config", get(config::tree))
            .route("/config/key", get(config::view))
            .route("/config/edit", get(config::edit::edit_form))
            .route("/config/review", post(config::edit::review))
            .route("/config/publish", post(config::edit::publish))
            .route(
                "/config/delete",
                get(config::edit::confirm_delete).post(config::edit::delete),
            )
            .route("/config/history", get(config::history::list))
            .route(
                "/config/rollback",
                get(config::history::confirm_rollback).post(config::history::rollback),
            )
            .route("/locks", get(queues::index))
            .route("/cluster", get(cluster::page))
            .route("/live/services", get(services::live_index))
            .route("/live/services/{name}", get(services::live_service))
            .route("/live/queues/{kind}", get(queues::live))
            .with_state(self.shared.clone())
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(guard),
                access::guard,
            ))
    }

    /// Serve on `listener` until `shutdown` completes; live pages' streams
    /// end with it, and requests under way are answered first.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        let shared = self.shared.clone();
        let closing = async move {
            shutdown.await;
            shared.closing.send_replace(true);
        };
        axum::serve(listener, self.router(local))
            .with_graceful_shutdown(closing)
            .await
    }

    /// End every live part now (as [`Console::serve`] does at shutdown), for a
    /// caller that serves [`Console::router`] itself.
    pub fn close_live_parts(&self) {
        self.shared.closing.send_replace(true);
    }
}
