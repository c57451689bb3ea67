//! The Cluster page: the store's members as the embedding program sees them
//! ([`ClusterView`]), the store's revision, and this process's health.

use axum::extract::State;
use axum::response::IntoResponse;
use coordkit::RangeRequest;
use futures::future::BoxFuture;
use maud::html;

use crate::failure::Answer;
use crate::page::{shell, Section};
use crate::Shared;

/// What the Cluster page shows of the store: `coordctl console` implements
/// it for etcd (each endpoint's status) and Postgres (the database's).
pub trait ClusterView: Send + Sync + 'static {
    /// The store's members now. Called once per view of the page.
    fn report(&self) -> BoxFuture<'_, ClusterReport>;
}

/// The store as a [`ClusterView`] reports it.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ClusterReport {
    /// The kind of store (`etcd 3.5.1`, `PostgreSQL 15`, …).
    pub backend: String,
    /// Each member or endpoint.
    pub members: Vec<Member>,
}

impl ClusterReport {
    /// A report of `backend` with `members`.
    pub fn new(backend: impl Into<String>, members: Vec<Member>) -> Self {
        ClusterReport {
            backend: backend.into(),
            members,
        }
    }
}

/// One member or endpoint of the store.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Member {
    /// Where it is reached (a URL, passwords removed).
    pub endpoint: String,
    /// What it said, or why it did not answer.
    pub status: Result<MemberStatus, String>,
}

impl Member {
    /// A member at `endpoint` with `status`.
    pub fn new(endpoint: impl Into<String>, status: Result<MemberStatus, String>) -> Self {
        Member {
            endpoint: endpoint.into(),
            status,
        }
    }
}

/// What a member that answered said.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct MemberStatus {
    /// Its id (etcd's member id in hex; a database's role).
    pub id: String,
    /// Whether it leads (etcd's raft leader; a Postgres primary).
    pub leader: bool,
    /// The store's revision as it reports it.
    pub revision: i64,
    /// The database's size in bytes.
    pub db_size: u64,
    /// The server's version.
    pub version: String,
    /// Anything else worth a line (raft term, compaction, contents).
    pub detail: String,
}

/// `/cluster`.
pub(crate) async fn page(State(shared): State<Shared>) -> Answer {
    let report = match &shared.cluster {
        Some(view) => Some(view.report().await),
        None => None,
    };
    let revision = shared
        .backend()
        .range(RangeRequest::key(shared.keys().namespace()).count_only())
        .await
        .map(|r| r.revision);
    let health = shared.coordinator.health().await;
    let body = html! {
        dl.facts {
            dt { "Store" } dd #backend { (report.as_ref().map_or("as given to the console", |r| r.backend.as_str())) }
            dt { "Revision" } dd #revision { @match &revision { Ok(r) => (r), Err(e) => span.error { (e.to_string()) } } }
            dt { "Namespace" } dd { (shared.keys().namespace()) }
            dt { "This console" } dd #console-health { @if health.is_ready() { "ready" } @else { "not ready" } }
            dt { "Store round trip" } dd { @match &health.backend { Ok(d) => (format!("{:.1} ms", d.as_secs_f64() * 1000.0)), Err(e) => span.error { (e) } } }
        }
        @if let Some(report) = &report {
            table #members {
                thead { tr { th { "Endpoint" } th { "Health" } th { "Id" } th { "Leader" } th { "Revision" } th { "Size" } th { "Version" } th { "Detail" } } }
                tbody {
                    @for m in &report.members {
                        tr {
                            td { (m.endpoint) }
                            @match &m.status {
                                Ok(s) => {
                                    td.passing { "healthy" } td { (s.id) } td { @if s.leader { "yes" } }
                                    td { (s.revision) } td { (size(s.db_size)) }
                                    td { (s.version) } td { (s.detail) }
                                },
                                Err(e) => { td.critical colspan="7" { "unhealthy: " (e) } },
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(shell(&shared, Section::Cluster, "Cluster", body).into_response())
}

/// A size in bytes as people read it: `512 B`, `20 KiB`, `1.5 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let shown = format!("{value:.1}");
    format!(
        "{} {}",
        shown.strip_suffix(".0").unwrap_or(&shown),
        UNITS[unit]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        let shown: Vec<String> = [0, 512, 20480, 1_572_864, 5 << 30]
            .into_iter()
            .map(super::size)
            .collect();
        assert_eq!(shown, ["0 B", "512 B", "20 KiB", "1.5 MiB", "5 GiB"]);
    }
}
