//! Editing a config key: the form, the review (validated in the key's codec,
//! with the diff against the version loaded), the publish (a compare-and-set
//! on that version), and the delete (on the version shown).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use coordkit::Error;
use maud::html;
use serde::Deserialize;

use super::{conflict, read, stored, KeyQuery};
use crate::failure::{Answer, Failure};
use crate::page::{form, hidden, shell, url_part, Section};
use crate::{values, Shared};

#[derive(Deserialize)]
pub(crate) struct EditQuery {
    /// The key to edit; absent for a new key.
    k: Option<String>,
    /// For a new key: the folder it goes in.
    #[serde(default)]
    prefix: String,
}

/// `GET /config/edit?k=KEY` (or `?prefix=P` for a new key): the value in a
/// text area, with the version it was loaded at.
pub(crate) async fn edit_form(
    State(shared): State<Shared>,
    Query(query): Query<EditQuery>,
) -> Answer {
    let shared = &shared;
    if shared.read_only {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "this console is read-only",
        ));
    }
    let (key, text, version) = match &query.k {
        Some(key) => {
            let kv = stored(shared, key).await?;
            if values::sealed_by(&kv.value).is_some() {
                return Err(Failure::bad_input(format!(
                    "{key} is encrypted: it is not edited here (the console has no keyring)"
                )));
            }
            let text = values::editable(&kv.value)
                .ok_or_else(|| {
                    Failure::bad_input(format!("{key} is not UTF-8: it is not edited here"))
                })?
                .to_string();
            (key.clone(), text, kv.mod_revision)
        }
        None => (query.prefix.clone(), String::new(), 0),
    };
    let codec = shared.config.codec_of(&key);
    let fields = html! {
        @if version == 0 {
            label { "Key " input type="text" name="key" value=(key) required; }
        } @else {
            (hidden("key", &key))
        }
        (hidden("version", version))
        label { "Value (" (codec.name()) ")" }
        textarea #editor name="value" rows="16" data-codec=(codec.name()) { (text) }
        p.error #invalid hidden {}
    };
    let title = if version == 0 {
        "New key".to_string()
    } else {
        format!("Edit {key}")
    };
    let body = html! {
        @if version != 0 { p { "Loaded at version " strong #loaded { (version) } ". Publishing compares on it." } }
        (form(shared, "/config/review", fields, "Review changes"))
    };
    Ok(shell(shared, Section::Config, &title, body).into_response())
}

/// What the edit form sends: the key, the version loaded (0: new), the value.
#[derive(Deserialize)]
pub(crate) struct Edited {
    key: String,
    version: i64,
    value: String,
}

/// The value checked in the key's codec.
fn checked(shared: &Shared, edited: &Edited) -> Answer<()> {
    let codec = shared.config.codec_of(&edited.key);
    values::validate(codec, &edited.key, &edited.value).map_err(|why| {
        Failure::bad_input(format!("the value is not valid {}: {why}", codec.name()))
    })
}

/// Refuse to write over an encrypted value (it would be written in clear).
fn not_sealed(key: &str, current: Option<&coordkit::KeyValue>) -> Answer<()> {
    match current.and_then(|kv| values::sealed_by(&kv.value)) {
        Some(id) => Err(Failure::bad_input(format!(
            "{key} is encrypted (key {id}): it is not edited here (the console has no keyring)"
        ))),
        None => Ok(()),
    }
}

/// The key as stored now, `None` if absent.
async fn now(shared: &Shared, key: &str) -> Answer<Option<coordkit::KeyValue>> {
    Ok(read(shared, key).await?)
}

/// `POST /config/review`: the diff against the version loaded, and the
/// button that publishes it; a conflict at once if the key has moved on.
pub(crate) async fn review(State(shared): State<Shared>, Form(edited): Form<Edited>) -> Answer {
    checked(&shared, &edited)?;
    let current = now(&shared, &edited.key).await?;
    not_sealed(&edited.key, current.as_ref())?;
    let at = current.as_ref().map_or(0, |kv| kv.mod_revision);
    if at != edited.version {
        return Ok(conflict(
            &shared,
            &edited.key,
            current.as_ref(),
            edited.value.as_bytes(),
            edited.version,
        ));
    }
    let codec = shared.config.codec_of(&edited.key);
    let old = current.map(|kv| kv.value).unwrap_or_default();
    let fields = html! {
        (hidden("key", &edited.key))
        (hidden("version", edited.version))
        textarea name="value" hidden { (edited.value) }
    };
    let body = html! {
        p { "Changes to " strong { (edited.key) } " over version " (edited.version) ":" }
        (values::diff(codec, &edited.key, &old, edited.value.as_bytes()))
        (form(&shared, "/config/publish", fields, "Publish"))
        p { a href={ "/config/key?k=" (url_part(&edited.key)) } { "Cancel" } }
    };
    Ok(shell(
        &shared,
        Section::Config,
        &format!("Review {}", edited.key),
        body,
    )
    .into_response())
}

/// `POST /config/publish`: a compare-and-set on the version loaded; a
/// conflict shows theirs against yours and writes nothing.
pub(crate) async fn publish(State(shared): State<Shared>, Form(edited): Form<Edited>) -> Answer {
    checked(&shared, &edited)?;
    // The compare-and-set below is on the version shown: a value sealed at
    // that version is caught here, one sealed since fails the compare.
    not_sealed(&edited.key, now(&shared, &edited.key).await?.as_ref())?;
    let written = shared
        .config
        .compare_and_set_bytes(
            &edited.key,
            edited.value.clone().into_bytes(),
            edited.version,
        )
        .await;
    match written {
        Ok(version) => {
            tracing::info!(target: "coordkit_console", key = %edited.key, over = edited.version, version, "published a config value");
            Ok(Redirect::to(&format!("/config/key?k={}", url_part(&edited.key))).into_response())
        }
        Err(Error::VersionConflict { .. }) => {
            let current = now(&shared, &edited.key).await?;
            Ok(conflict(
                &shared,
                &edited.key,
                current.as_ref(),
                edited.value.as_bytes(),
                edited.version,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /config/delete?k=KEY`: the value and a confirmation on its version.
pub(crate) async fn confirm_delete(
    State(shared): State<Shared>,
    Query(query): Query<KeyQuery>,
) -> Answer {
    let kv = stored(&shared, &query.k).await?;
    let codec = shared.config.codec_of(&query.k);
    let (text, _) = values::shown(codec, &query.k, &kv.value);
    let fields = html! { (hidden("key", &query.k)) (hidden("version", kv.mod_revision)) };
    let body = html! {
        p { "Delete " strong { (query.k) } " at version " (kv.mod_revision) "? Its history stays until the store compacts it." }
        pre #value { (text) }
        (form(&shared, "/config/delete", fields, "Delete"))
        p { a href={ "/config/key?k=" (url_part(&query.k)) } { "Cancel" } }
    };
    Ok(shell(
        &shared,
        Section::Config,
        &format!("Delete {}", query.k),
        body,
    )
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct Deleted {
    key: String,
    version: i64,
}

/// `POST /config/delete`: delete the key if it is at the version shown.
pub(crate) async fn delete(State(shared): State<Shared>, Form(form): Form<Deleted>) -> Answer {
    match shared
        .config
        .delete_if_version(&form.key, form.version)
        .await
    {
        Ok(()) => {
            tracing::info!(target: "coordkit_console", key = %form.key, version = form.version, "deleted a config key");
            let folder = form.key.rfind('/').map_or("", |i| &form.key[..=i]);
            Ok(Redirect::to(&format!("/config?prefix={}", url_part(folder))).into_response())
        }
        Err(Error::VersionConflict { .. }) => {
            let current = now(&shared, &form.key).await?;
            Ok(conflict(
                &shared,
                &form.key,
                current.as_ref(),
                b"",
                form.version,
            ))
        }
        Err(e) => Err(e.into()),
    }
}
