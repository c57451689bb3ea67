//! Services: every service with its instances' health, one service's
//! instances with their lease time left (live), and deregistering one on the
//! revision shown.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use coordkit::{
    BackendExt, Compare, CompareOp, DeleteRequest, InstanceHealth, KeyValue, ProbeVerdict,
    RangeRequest, ServiceInfo, Txn, TxnOpResponse,
};
use maud::{html, Markup};
use serde::Deserialize;

use crate::failure::{Answer, Failure};
use crate::page::{form, hidden, segment, shell, Section};
use crate::{live, Shared};

/// `/services`: every service, live.
pub(crate) async fn index(State(shared): State<Shared>) -> Answer {
    let part = services_part(shared.clone()).await;
    let body = html! { div data-live="/live/services" { (part) } };
    Ok(shell(&shared, Section::Services, "Services", body).into_response())
}

/// The live stream of `/services`.
pub(crate) async fn live_index(State(shared): State<Shared>) -> Response {
    let prefix = shared.keys().services();
    live::part(shared, prefix, services_part).into_response()
}

/// The table of services: instances, and how many passing, warning, critical.
async fn services_part(shared: Shared) -> Markup {
    let kvs = match shared.backend().get_prefix(shared.keys().services()).await {
        Ok(kvs) => kvs,
        Err(e) => return unavailable(&e),
    };
    let verdicts = verdicts_of(&kvs);
    let mut services: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for kv in &kvs {
        if let Some(info) = as_read(&shared, kv, &verdicts) {
            let counts = services.entry(info.name.clone()).or_default();
            counts[health_index(info.health)] += 1;
        }
    }
    html! {
        @if services.is_empty() { p.empty { "No service is registered." } }
        @else {
            table #services {
                thead { tr { th { "Service" } th { "Instances" } th { "Passing" } th { "Warning" } th { "Critical" } } }
                tbody {
                    @for (name, [passing, warning, critical]) in &services {
                        tr data-service=(name) {
                            td { a href={ "/services/" (segment(name)) } { (name) } }
                            td.count { (passing + warning + critical) }
                            td.passing { (passing) } td.warning { (warning) } td.critical { (critical) }
                        }
                    }
                }
            }
        }
    }
}

fn health_index(health: InstanceHealth) -> usize {
    match health {
        InstanceHealth::Passing => 0,
        InstanceHealth::Warning => 1,
        _ => 2,
    }
}

fn health_name(health: InstanceHealth) -> &'static str {
    ["passing", "warning", "critical"][health_index(health)]
}

/// A part that says the store did not answer.
pub(crate) fn unavailable(e: &coordkit::Error) -> Markup {
    html! { p.error { "The store did not answer: " (e.to_string()) } }
}

/// A service or instance name as the registry allows it.
fn checked(what: &str, value: &str) -> Answer<()> {
    if value.is_empty() || value.contains('/') || value.chars().any(char::is_control) {
        return Err(Failure::bad_input(format!(
            "invalid {what}: must be non-empty, without '/' or control characters"
        )));
    }
    Ok(())
}

/// `/services/{name}`: its instances, live.
pub(crate) async fn service(State(shared): State<Shared>, Path(name): Path<String>) -> Answer {
    checked("service name", &name)?;
    let part = instances_part(shared.clone(), name.clone()).await;
    let body = html! {
        p { a href="/services" { "All services" } }
        div data-live={ "/live/services/" (segment(&name)) } { (part) }
    };
    Ok(shell(&shared, Section::Services, &format!("Service {name}"), body).into_response())
}

/// The live stream of `/services/{name}`.
pub(crate) async fn live_service(State(shared): State<Shared>, Path(name): Path<String>) -> Answer {
    checked("service name", &name)?;
    let prefix = shared.keys().service(&name);
    Ok(live::part(shared, prefix, move |s| instances_part(s, name.clone())).into_response())
}

/// `kvs` by key, to find the verdict beside each instance.
fn verdicts_of(kvs: &[KeyValue]) -> HashMap<&[u8], &KeyValue> {
    kvs.iter().map(|kv| (kv.key.as_slice(), kv)).collect()
}

/// The instance `kv` holds, if it is one, as every read shows it: with the
/// prober's verdict stored beside it (among `verdicts`) folded in.
fn as_read(
    shared: &Shared,
    kv: &KeyValue,
    verdicts: &HashMap<&[u8], &KeyValue>,
) -> Option<ServiceInfo> {
    let info = serde_json::from_slice::<ServiceInfo>(&kv.value).ok()?;
    let key = shared.keys().probe_verdict(&info.name, &info.id);
    let verdict = verdicts
        .get(key.as_bytes())
        .and_then(|v| serde_json::from_slice::<ProbeVerdict>(&v.value).ok());
    Some(info.with_verdict(kv.create_revision, verdict.as_ref()))
}

/// One instance as stored: what it says, its key's revision, its lease's time left.
struct Instance {
    info: ServiceInfo,
    revision: i64,
    ttl_left: Option<i64>,
}

async fn instance_of(
    shared: &Shared,
    kv: &KeyValue,
    verdicts: &HashMap<&[u8], &KeyValue>,
) -> Option<Instance> {
    let backend = shared.backend();
    let info = as_read(shared, kv, verdicts)?;
    let ttl_left = match kv.lease {
        Some(lease) => backend
            .lease_time_to_live(lease)
            .await
            .ok()
            .map(|t| t.remaining_ttl),
        None => None,
    };
    Some(Instance {
        info,
        revision: kv.mod_revision,
        ttl_left,
    })
}

async fn instances_part(shared: Shared, name: String) -> Markup {
    let kvs = match shared
        .backend()
        .get_prefix(shared.keys().service(&name))
        .await
    {
        Ok(kvs) => kvs,
        Err(e) => return unavailable(&e),
    };
    let verdicts = verdicts_of(&kvs);
    let mut instances = Vec::new();
    for kv in &kvs {
        if let Some(i) = instance_of(&shared, kv, &verdicts).await {
            instances.push(i);
        }
    }
    html! {
        @if instances.is_empty() { p.empty { "No instance of " (name) " is registered." } }
        @else {
            table #instances {
                thead { tr { th { "Id" } th { "Address" } th { "Port" } th { "Health" } th { "Weight" } th { "Tags" } th { "Metadata" } th { "Lease left" } th {} } }
                tbody {
                    @for i in &instances { (instance_row(&shared, &name, i)) }
                }
            }
        }
    }
}

fn instance_row(shared: &Shared, name: &str, i: &Instance) -> Markup {
    let info = &i.info;
    html! {
        tr data-instance=(info.id) {
            td { (info.id) } td { (info.address) } td { (info.port) }
            @match &info.probe {
                Some(p) => td class=(health_name(info.health)) title={ "probed by " (p.prober) ": " (p.detail) } {
                    (health_name(info.health)) " " span.probed { "(probed)" }
                },
                None => td class=(health_name(info.health)) { (health_name(info.health)) },
            }
            td { (info.weight) }
            td { (info.tags.iter().cloned().collect::<Vec<_>>().join(", ")) }
            td { @for (k, v) in &info.metadata { span.pair { (k) "=" (v) } " " } }
            td {
                @match i.ttl_left {
                    Some(t) => span.ttl data-ttl=(t) { (t) "s" },
                    None if info.persistent => span.persistent title="registered without a lease: stays until deregistered" { "persistent" },
                    None => "—",
                }
            }
            td { @if !shared.read_only {
                a.action href={ "/services/" (segment(name)) "/" (segment(&info.id)) "/deregister" } { "Deregister…" }
            } }
        }
    }
}

/// `GET /services/{name}/{id}/deregister`: the instance and a confirmation
/// that compares on the revision shown.
pub(crate) async fn confirm_deregister(
    State(shared): State<Shared>,
    Path((name, id)): Path<(String, String)>,
) -> Answer {
    checked("service name", &name)?;
    checked("instance id", &id)?;
    let key = shared.keys().instance(&name, &id);
    let kv = shared.backend().get(key.clone()).await?.ok_or_else(|| {
        Failure::new(
            StatusCode::NOT_FOUND,
            format!("{name}/{id} is not registered"),
        )
    })?;
    let verdict = shared
        .backend()
        .get(shared.keys().probe_verdict(&name, &id))
        .await?;
    let verdicts = verdicts_of(verdict.as_slice());
    let instance = instance_of(&shared, &kv, &verdicts).await.ok_or_else(|| {
        Failure::bad_input(format!("{key} is not an instance written by coordkit"))
    })?;
    let action = format!("/services/{}/{}/deregister", segment(&name), segment(&id));
    let body = html! {
        p { "Remove instance " strong { (id) } " (" (instance.info.authority()) ") of " strong { (name) } ", as registered at revision " (instance.revision) "? "
            "A process that still keeps it registered writes it again." }
        (form(&shared, &action, hidden("revision", instance.revision), "Deregister"))
        p { a href={ "/services/" (segment(&name)) } { "Cancel" } }
    };
    Ok(shell(&shared, Section::Services, "Deregister", body).into_response())
}

#[derive(Deserialize)]
pub(crate) struct Shown {
    revision: i64,
}

/// `POST /services/{name}/{id}/deregister`: delete the instance and its id
/// index entry if the instance is still at the revision shown.
pub(crate) async fn deregister(
    State(shared): State<Shared>,
    Path((name, id)): Path<(String, String)>,
    Form(shown): Form<Shown>,
) -> Answer {
    checked("service name", &name)?;
    checked("instance id", &id)?;
    let keys = shared.keys();
    let key = keys.instance(&name, &id);
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            shown.revision,
        )])
        .and_then([
            DeleteRequest::key(key.clone()),
            DeleteRequest::key(keys.id_index_entry(&id, &name)),
            DeleteRequest::key(keys.probe_verdict(&name, &id)),
        ])
        .or_else([RangeRequest::key(key.clone())]);
    let resp = shared.backend().txn(txn).await?;
    if !resp.succeeded {
        let now = match resp.responses.first() {
            Some(TxnOpResponse::Range(r)) => r.kvs.first().map(|kv| kv.mod_revision),
            _ => None,
        };
        let why = match now {
            Some(r) => format!(
                "{name}/{id} changed since it was shown (now at revision {r}): nothing was removed"
            ),
            None => format!("{name}/{id} is no longer registered"),
        };
        return Err(Failure::new(StatusCode::CONFLICT, why));
    }
    tracing::info!(target: "coordkit_console", key = %key, revision = shown.revision, "deregistered an instance");
    Ok(Redirect::to(&format!("/services/{}", segment(&name))).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_checked() {
        assert!(super::checked("x", "api").is_ok());
        for bad in ["", "a/b", "a\u{1}"] {
            assert!(super::checked("x", bad).is_err());
        }
    }
}
