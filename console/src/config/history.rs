//! A config key's history: its versions, any two compared, where history
//! ends (the key's creation, or the store's compaction), and a rollback that
//! says what it restores and compares on the version shown.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use coordkit::config::ConfigVersion;
use coordkit::{Error, RangeRequest};
use maud::{html, Markup};
use serde::Deserialize;

use super::{conflict, read, stored};
use crate::failure::{Answer, Failure};
use crate::page::{form, hidden, shell, url_part, Section};
use crate::{values, Shared};

/// The most versions a history page lists.
const DEPTH: usize = 100;

#[derive(Deserialize)]
pub(crate) struct HistoryQuery {
    k: String,
    /// Compare version `a` …
    a: Option<i64>,
    /// … with version `b`.
    b: Option<i64>,
}

/// `/config/history?k=KEY[&a=V&b=W]`: the versions newest first, the diff of
/// two chosen, and where the list ends.
pub(crate) async fn list(
    State(shared): State<Shared>,
    Query(query): Query<HistoryQuery>,
) -> Answer {
    let key = query.k;
    let kv = stored(&shared, &key).await?;
    let versions = shared.config.history_bytes(&key, DEPTH).await?;
    let codec = shared.config.codec_of(&key);
    let find = |v: i64| versions.iter().find(|c| c.version == v);
    let compared = match (query.a.map(find), query.b.map(find)) {
        (Some(Some(a)), Some(Some(b))) => Some((a, b)),
        (None, None) => None,
        _ => return Err(Failure::bad_input("compare two versions listed here")),
    };
    let current = kv.mod_revision;
    let body = html! {
        p { a href={ "/config/key?k=" (url_part(&key)) } { "Back to " (key) } }
        @if let Some((a, b)) = compared {
            h2 #compared { "Version " (a.version) " against version " (b.version) }
            (values::diff(codec, &key, &a.value, &b.value))
        }
        form.compare method="get" action="/config/history" {
            input type="hidden" name="k" value=(key);
            table #versions {
                thead { tr { th { "Version" } th { "A" } th { "B" } th { "Value" } th {} } }
                tbody {
                    @for (i, v) in versions.iter().enumerate() {
                        (version_row(&shared, &key, v, i, current))
                    }
                }
            }
            button type="submit" { "Compare A with B" }
        }
        (end_of(&versions, kv.create_revision))
    };
    Ok(shell(&shared, Section::Config, &format!("History of {key}"), body).into_response())
}

fn version_row(
    shared: &Shared,
    key: &str,
    v: &ConfigVersion<Vec<u8>>,
    i: usize,
    current: i64,
) -> Markup {
    let (text, _) = values::shown(shared.config.codec_of(key), key, &v.value);
    let preview: String = text.chars().take(80).collect();
    html! {
        tr data-version=(v.version) {
            td { (v.version) @if i == 0 { " (current)" } }
            td { input type="radio" name="a" value=(v.version) checked[i == 1]; }
            td { input type="radio" name="b" value=(v.version) checked[i == 0]; }
            td { code { (preview) } }
            td { @if i > 0 && !shared.read_only {
                a.action href={ "/config/rollback?k=" (url_part(key)) "&to=" (v.version) "&expected=" (current) } { "Roll back to this…" }
            } }
        }
    }
}

/// Where the list ends: at the key's creation, at the page's depth, or at
/// the store's compaction (older versions are gone).
fn end_of(versions: &[ConfigVersion<Vec<u8>>], created: i64) -> Markup {
    let oldest = versions.last().map_or(created, |v| v.version);
    html! {
        @if oldest == created { p.end #created { "Created at version " (created) "." } }
        @else if versions.len() >= DEPTH { p.end #more { "Older versions are not listed (the " (DEPTH) " newest are)." } }
        @else { p.end #compacted { "History before version " (oldest) " was compacted by the store: older versions are gone." } }
    }
}

#[derive(Deserialize)]
pub(crate) struct RollbackQuery {
    k: String,
    to: i64,
    expected: i64,
}

/// `GET /config/rollback?k=KEY&to=V&expected=W`: what a rollback restores
/// (the diff from the current value) and over which version.
pub(crate) async fn confirm_rollback(
    State(shared): State<Shared>,
    Query(q): Query<RollbackQuery>,
) -> Answer {
    let kv = stored(&shared, &q.k).await?;
    let old = value_at(&shared, &q.k, q.to).await?;
    let codec = shared.config.codec_of(&q.k);
    let fields =
        html! { (hidden("key", &q.k)) (hidden("to", q.to)) (hidden("expected", q.expected)) };
    let body = html! {
        p #restores { "Write the value of version " strong { (q.to) } " of " strong { (q.k) } " again, as a new version, over version " strong { (q.expected) } "." }
        @if kv.mod_revision != q.expected {
            p.error { "The key is now at version " (kv.mod_revision) ", not " (q.expected) ": this rollback will be refused. Open the history again." }
        }
        h2 { "Current against restored" }
        (values::diff(codec, &q.k, &kv.value, &old))
        (form(&shared, "/config/rollback", fields, "Roll back"))
        p { a href={ "/config/history?k=" (url_part(&q.k)) } { "Cancel" } }
    };
    Ok(shell(
        &shared,
        Section::Config,
        &format!("Roll back {}", q.k),
        body,
    )
    .into_response())
}

/// The value `key` had at `version`.
async fn value_at(shared: &Shared, key: &str, version: i64) -> Answer<Vec<u8>> {
    if version <= 0 {
        return Err(Failure::bad_input("a version is positive"));
    }
    let full = format!("{}{key}", shared.config.root());
    let resp = shared
        .backend()
        .range(RangeRequest::key(full).at_revision(version))
        .await?;
    match resp.kvs.into_iter().next() {
        Some(kv) if kv.mod_revision == version => Ok(kv.value),
        _ => Err(Failure::bad_input(format!(
            "{version} is not a version of {key}"
        ))),
    }
}

#[derive(Deserialize)]
pub(crate) struct Rollback {
    key: String,
    to: i64,
    expected: i64,
}

/// `POST /config/rollback`: restore version `to` only over version
/// `expected`; a conflict shows theirs against the restored value.
pub(crate) async fn rollback(State(shared): State<Shared>, Form(form): Form<Rollback>) -> Answer {
    match shared
        .config
        .rollback_if_version(&form.key, form.to, form.expected)
        .await
    {
        Ok(version) => {
            tracing::info!(target: "coordkit_console", key = %form.key, to = form.to, over = form.expected, version, "rolled a config key back");
            Ok(Redirect::to(&format!("/config/history?k={}", url_part(&form.key))).into_response())
        }
        Err(Error::VersionConflict { .. }) => {
            let restored = value_at(&shared, &form.key, form.to).await?;
            let current = read(&shared, &form.key).await?;
            Ok(conflict(
                &shared,
                &form.key,
                current.as_ref(),
                &restored,
                form.expected,
            ))
        }
        Err(e) => Err(e.into()),
    }
}
