//! Config: the keys as a tree with server-side search and paging, and one
//! key's value. Editing is in `edit`, history and rollback in `history`.

pub(crate) mod edit;
pub(crate) mod history;

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use coordkit::config::GrayRelease;
use coordkit::{BackendExt, KeyValue};
use maud::{html, Markup};
use serde::Deserialize;

use crate::failure::{Answer, Failure};
use crate::page::{shell, url_part, Section};
use crate::{values, Shared};

/// Entries per page of the tree.
const PAGE: usize = 100;

#[derive(Deserialize)]
pub(crate) struct TreeQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
}

/// One line of the tree: a folder (with how many keys under it) or a key.
enum Entry {
    Folder(String, usize),
    Key(String),
}

/// `/config?prefix=P&q=S&page=N`: the folders and keys right under `P`, or
/// with `q` every key under `P` containing `S`; a page at a time.
pub(crate) async fn tree(State(shared): State<Shared>, Query(query): Query<TreeQuery>) -> Answer {
    let prefix = query.prefix;
    if !(prefix.is_empty() || prefix.ends_with('/')) {
        return Err(Failure::bad_input("a prefix is empty or ends with '/'"));
    }
    let keys = shared.config.list(&prefix).await?;
    let entries = entries(&prefix, &query.q, keys);
    let pages = entries.len().div_ceil(PAGE).max(1);
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let shown = entries.iter().skip((page - 1) * PAGE).take(PAGE);
    let link = |p: usize| {
        format!(
            "/config?prefix={}&q={}&page={p}",
            url_part(&prefix),
            url_part(&query.q)
        )
    };
    let body = html! {
        (breadcrumbs(&prefix))
        form.search method="get" action="/config" {
            input type="hidden" name="prefix" value=(prefix);
            input type="search" name="q" value=(query.q) placeholder="Search keys under this folder";
            button type="submit" { "Search" }
        }
        @if !shared.read_only { p { a.action href={ "/config/edit?prefix=" (url_part(&prefix)) } { "New key…" } } }
        @if entries.is_empty() { p.empty { "No key here." } }
        @else {
            p.count { (entries.len()) " entries · page " (page) " of " (pages) }
            ul #tree {
                @for entry in shown {
                    @match entry {
                        Entry::Folder(f, n) => li.folder { a href={ "/config?prefix=" (url_part(f)) } { (f) } " (" (n) ")" },
                        Entry::Key(k) => li.key { a href={ "/config/key?k=" (url_part(k)) } { (k) } },
                    }
                }
            }
            nav.pages {
                @if page > 1 { a rel="prev" href=(link(page - 1)) { "Previous" } }
                @if page < pages { a rel="next" href=(link(page + 1)) { "Next" } }
            }
        }
    };
    Ok(shell(&shared, Section::Config, "Config", body).into_response())
}

fn entries(prefix: &str, q: &str, keys: Vec<String>) -> Vec<Entry> {
    if !q.is_empty() {
        return keys
            .into_iter()
            .filter(|k| k.contains(q))
            .map(Entry::Key)
            .collect();
    }
    let mut folders: BTreeMap<String, usize> = BTreeMap::new();
    let mut leaves = Vec::new();
    for key in keys {
        match key[prefix.len()..].split_once('/') {
            Some((first, _)) => *folders.entry(format!("{prefix}{first}/")).or_default() += 1,
            None => leaves.push(Entry::Key(key)),
        }
    }
    folders
        .into_iter()
        .map(|(f, n)| Entry::Folder(f, n))
        .chain(leaves)
        .collect()
}

fn breadcrumbs(prefix: &str) -> Markup {
    // Each folder on the way down, with the prefix that opens it.
    let folders: Vec<(&str, &str)> = prefix
        .match_indices('/')
        .map(|(end, _)| {
            let start = prefix[..end].rfind('/').map_or(0, |i| i + 1);
            (&prefix[start..end], &prefix[..=end])
        })
        .filter(|(name, _)| !name.is_empty())
        .collect();
    html! {
        p.crumbs {
            a href="/config" { "config" } " / "
            @for (name, at) in folders {
                a href={ "/config?prefix=" (url_part(at)) } { (name) } " / "
            }
        }
    }
}

/// `?k=KEY`: one config key.
#[derive(Deserialize)]
pub(crate) struct KeyQuery {
    pub(crate) k: String,
}

/// The stored key-value of config key `key`, `None` if absent. The config
/// center reads it first (and checks the key by its rules); the raw read
/// gives the revisions.
pub(crate) async fn read(shared: &Shared, key: &str) -> coordkit::Result<Option<KeyValue>> {
    match shared.config.get_bytes_with_version(key).await {
        Err(coordkit::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let full = format!("{}{key}", shared.config.root());
    shared.backend().get(full).await
}

/// The stored key-value of config key `key`, or `NotFound`.
pub(crate) async fn stored(shared: &Shared, key: &str) -> Answer<KeyValue> {
    read(shared, key).await?.ok_or_else(|| {
        coordkit::Error::NotFound {
            key: key.to_string(),
        }
        .into()
    })
}

/// `/config/key?k=KEY`: the value in its codec, its version and revisions.
pub(crate) async fn view(State(shared): State<Shared>, Query(query): Query<KeyQuery>) -> Answer {
    let key = query.k;
    let kv = stored(&shared, &key).await?;
    let gray = shared.config.gray(&key).await?;
    Ok(shell(
        &shared,
        Section::Config,
        &key,
        value_view(&shared, &key, &kv, gray.as_ref()),
    )
    .into_response())
}

fn value_view(shared: &Shared, key: &str, kv: &KeyValue, gray: Option<&GrayRelease>) -> Markup {
    let codec = shared.config.codec_of(key);
    let (text, binary) = values::shown(codec, key, &kv.value);
    // An encrypted value is shown as stored (the console has no keyring) and
    // not edited: a value typed here would be written in clear.
    let sealed = values::sealed_by(&kv.value);
    let k = url_part(key);
    html! {
        (breadcrumbs(parent(key)))
        dl.facts {
            dt { "Version" } dd #version { (kv.mod_revision) }
            dt { "Created at" } dd { (kv.create_revision) }
            dt { "Writes since" } dd { (kv.version) }
            dt { "Codec" } dd { (codec.name()) @if binary { " (not UTF-8: shown as hex)" } }
            @if let Some(id) = sealed { dt { "Encrypted" } dd #sealed { "with key " (id) " (shown as stored; opened only by a program with the keyring)" } }
        }
        pre #value class=[binary.then_some("binary")] { (text) }
        @if let Some(gray) = gray { (gray_view(shared, key, gray)) }
        p.actions {
            @if !shared.read_only && !binary && sealed.is_none() { a.action #edit href={ "/config/edit?k=" (k) } { "Edit" } " " }
            a.action #history href={ "/config/history?k=" (k) } { "History" } " "
            @if !shared.read_only { a.action #delete href={ "/config/delete?k=" (k) } { "Delete…" } }
        }
    }
}

/// A key's gray release: its selector, version and value.
fn gray_view(shared: &Shared, key: &str, gray: &GrayRelease) -> Markup {
    let (text, _) = values::shown(shared.config.codec_of(key), key, &gray.value);
    let selector: Vec<String> = gray
        .selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    html! {
        section #gray {
            h2 { "Gray release" }
            p { "Served instead of the value above to the instances labelled " strong { (selector.join(", ")) } " — version " (gray.version) ". Promote or drop it with " code { "coordctl config gray" } "." }
            pre { (text) }
        }
    }
}

/// The folder a key is in (`a/b/` for `a/b/c`).
fn parent(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

/// A conflict: the key changed behind the page. Theirs (what the store holds
/// now, `None` if absent) against yours; nothing was written.
pub(crate) fn conflict(
    shared: &Shared,
    key: &str,
    theirs: Option<&KeyValue>,
    yours: &[u8],
    loaded: i64,
) -> Response {
    let codec = shared.config.codec_of(key);
    let empty = Vec::new();
    let (their_bytes, their_version) =
        theirs.map_or((&empty, 0), |kv| (&kv.value, kv.mod_revision));
    let body = html! {
        p.error #conflict {
            (key) " changed since the page was loaded (version " (loaded) "): "
            @if their_version == 0 { "it has been deleted" } @else { "it is now at version " (their_version) }
            ". Nothing was written."
        }
        h2 { "Theirs against yours" }
        (values::diff(codec, key, their_bytes, yours))
        p { a.action href={ "/config/edit?k=" (url_part(key)) } { "Edit again from theirs" } }
    };
    let page = shell(shared, Section::Config, &format!("Conflict on {key}"), body);
    (axum::http::StatusCode::CONFLICT, page).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Folder(f, n) => format!("{f}({n})"),
                Entry::Key(k) => k.clone(),
            })
            .collect()
    }

    #[test]
    fn the_tree_groups_folders_and_searches_flat() {
        let keys = || vec!["a/x".into(), "a/y/z".into(), "a/y/w".into(), "a/k".into()];
        assert_eq!(names(&entries("a/", "", keys())), ["a/y/(2)", "a/x", "a/k"]);
        assert_eq!(names(&entries("a/", "y/", keys())), ["a/y/z", "a/y/w"]);
        assert_eq!(parent("a/b/c"), "a/b/");
        assert_eq!(parent("c"), "");
        let crumbs = breadcrumbs("a/b/").into_string();
        assert!(
            crumbs.contains(r#"href="/config?prefix=a/">a</a>"#),
            "{crumbs}"
        );
        assert!(
            crumbs.contains(r#"href="/config?prefix=a/b/">b</a>"#),
            "{crumbs}"
        );
    }
}
