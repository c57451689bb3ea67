//! Locks, semaphores and elections: each name with its holders in order,
//! fencing tokens, waiters and lease time left; each kind a live part.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use coordkit::{BackendExt, QueueEntry};
use maud::{html, Markup};

use crate::failure::{Answer, Failure};
use crate::page::{shell, Section};
use crate::services::unavailable;
use crate::{live, Shared};

/// A kind of queue the page shows.
#[derive(Clone, Copy)]
enum Kind {
    Lock,
    Semaphore,
    Election,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Lock, Kind::Semaphore, Kind::Election];

    fn name(self) -> &'static str {
        match self {
            Kind::Lock => "locks",
            Kind::Semaphore => "semaphores",
            Kind::Election => "elections",
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn prefix(self, shared: &Shared) -> String {
        let keys = shared.keys();
        match self {
            Kind::Lock => keys.locks(),
            Kind::Semaphore => keys.semaphores(),
            Kind::Election => keys.elections(),
        }
    }

    async fn queue(self, shared: &Shared, name: &str) -> coordkit::Result<Vec<QueueEntry>> {
        let c = &shared.coordinator;
        match self {
            Kind::Lock => c.lock().holders_and_waiters(name).await,
            Kind::Semaphore => c.semaphore().holders_and_waiters(name).await,
            Kind::Election => c.election().holders_and_waiters(name).await,
        }
    }

    /// What the first entries are called.
    fn first_role(self) -> &'static str {
        match self {
            Kind::Lock => "holder",
            Kind::Semaphore => "queued",
            Kind::Election => "leader",
        }
    }
}

/// `/locks`: every kind, each live.
pub(crate) async fn index(State(shared): State<Shared>) -> Answer {
    let mut parts = Vec::new();
    for kind in Kind::ALL {
        parts.push((kind, kind_part(shared.clone(), kind).await));
    }
    let body = html! {
        @for (kind, part) in parts {
            section {
                h2 { (capitalized(kind.name())) }
                div data-live={ "/live/queues/" (kind.name()) } id={ "live-" (kind.name()) } { (part) }
            }
        }
    };
    Ok(shell(
        &shared,
        Section::Locks,
        "Locks, semaphores and elections",
        body,
    )
    .into_response())
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `/live/queues/{kind}`: one kind's part, sent again at each change.
pub(crate) async fn live(
    State(shared): State<Shared>,
    Path(kind): Path<String>,
) -> Answer<Response> {
    let kind =
        Kind::parse(&kind).ok_or_else(|| Failure::bad_input("locks, semaphores or elections"))?;
    let prefix = kind.prefix(&shared);
    Ok(live::part(shared, prefix, move |s| kind_part(s, kind)).into_response())
}

/// Every name of one kind with its queue.
async fn kind_part(shared: Shared, kind: Kind) -> Markup {
    let prefix = kind.prefix(&shared);
    let kvs = match shared.backend().get_prefix(prefix.clone()).await {
        Ok(kvs) => kvs,
        Err(e) => return unavailable(&e),
    };
    let names: BTreeSet<String> = kvs
        .iter()
        .filter_map(|kv| {
            let key = kv.key_str();
            let (name, _) = key.get(prefix.len()..)?.split_once('/')?;
            Some(name.to_string())
        })
        .collect();
    let mut queues = Vec::new();
    for name in names {
        match kind.queue(&shared, &name).await {
            Ok(entries) => queues.push((name, entries)),
            Err(e) => return unavailable(&e),
        }
    }
    html! {
        @if queues.is_empty() { p.empty { "None held or awaited." } }
        @for (name, entries) in &queues {
            table.queue data-queue=(name) {
                caption { (name) }
                thead { tr { th { "Position" } th { "Role" } th { "Fencing token" } th { "Lease left" } th { "Value" } th { "Key" } } }
                tbody {
                    @for (i, e) in entries.iter().enumerate() {
                        tr data-token=(e.fencing_token) {
                            td { (i + 1) }
                            td.role { @if i == 0 { (kind.first_role()) } @else if matches!(kind, Kind::Semaphore) { "queued" } @else { "waiting" } }
                            td.token { (e.fencing_token) }
                            td { @match e.ttl_left { Some(t) => span.ttl data-ttl=(t.as_secs()) { (t.as_secs()) "s" }, None => "—" } }
                            td { (String::from_utf8_lossy(&e.value)) }
                            td { code { (e.key) } }
                        }
                    }
                }
            }
        }
    }
}
