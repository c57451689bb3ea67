//! The page around every view, the forms' common parts, and the embedded
//! assets.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use crate::Shared;

/// The style sheet and the script, in the binary.
const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");

/// The sections of the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Services,
    Config,
    Locks,
    Cluster,
}

impl Section {
    const ALL: [(Section, &'static str, &'static str); 4] = [
        (Section::Services, "Services", "/services"),
        (Section::Config, "Config", "/config"),
        (Section::Locks, "Locks", "/locks"),
        (Section::Cluster, "Cluster", "/cluster"),
    ];
}

/// A whole page: head, navigation (with the namespace and whether it is
/// read-only), then `body`.
pub(crate) fn shell(shared: &Shared, section: Section, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · coordkit console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header {
                    span.brand { "coordkit" }
                    nav {
                        @for (s, name, href) in Section::ALL {
                            a href=(href) class=[(s == section).then_some("current")] { (name) }
                        }
                    }
                    span.namespace title="namespace" { (shared.keys().namespace()) }
                    @if shared.read_only { span.badge #read-only { "read-only" } }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A minimal page for refusals and failures (no navigation, no script).
pub(crate) fn bare(status: StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (status) } link rel="stylesheet" href="/assets/console.css"; }
            body { main { h1 { (status) } p.error #failure { (message) } p { a href="/services" { "Back to the console" } } } }
        }
    }
}

/// A form that posts to `action` with the CSRF token, `fields` and a button;
/// nothing on a read-only console.
pub(crate) fn form(shared: &Shared, action: &str, fields: Markup, button: &str) -> Markup {
    if shared.read_only {
        return html! {};
    }
    html! {
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(shared.access.csrf());
            (fields)
            button type="submit" { (button) }
        }
    }
}

/// A hidden form field.
pub(crate) fn hidden(name: &str, value: impl std::fmt::Display) -> Markup {
    html! { input type="hidden" name=(name) value=(value.to_string()); }
}

/// `/assets/{name}`: the style sheet and the script.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "console.css" => ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response(),
        "console.js" => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            JS,
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A query value made safe for a URL.
pub(crate) fn url_part(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A path segment made safe for a URL (`/` escaped too).
pub(crate) fn segment(value: &str) -> String {
    url_part(value).replace('/', "%2F")
}
