//! Who may use the console, and from where: the token and its cookie, the
//! `Host` allow-list, and the checks every mutation passes (read-only, origin,
//! form body, CSRF token); the headers every response carries.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::{ConsoleError, Shared};

/// The cookie that carries the session.
const COOKIE: &str = "coordkit_console";
/// The largest form body a mutation may send.
const MAX_FORM: usize = 1 << 20;
/// What every response may load and do: this origin's script and style only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's secrets: the token an operator logs in with, and the CSRF
/// token its forms carry. Both random per run unless the token is given.
pub(crate) struct Access {
    token: String,
    csrf: String,
}

impl Access {
    pub fn new(token: Option<String>) -> Result<Self, ConsoleError> {
        let token = match token {
            Some(t) => {
                if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(ConsoleError::BadToken(
                        "at least 16 characters, no whitespace".into(),
                    ));
                }
                t
            }
            None => random()?,
        };
        Ok(Access {
            token,
            csrf: random()?,
        })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The CSRF token every form carries.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// 32 random bytes as hex.
fn random() -> Result<String, ConsoleError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ConsoleError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The state of the middleware: the console and its allowed hosts.
pub(crate) struct Guard {
    shared: Shared,
    hosts: Vec<String>,
}

impl Guard {
    pub fn new(shared: Shared, hosts: Vec<String>) -> Self {
        Guard { shared, hosts }
    }
}

/// Every request passes here: the host, then the login or the cookie, then a
/// mutation's checks; every response leaves with the hardening headers.
pub(crate) async fn guard(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = match admit(&guard, request, next).await {
        Ok(r) | Err(r) => r,
    };
    harden(response.headers_mut());
    response
}

async fn admit(guard: &Guard, request: Request, next: Next) -> Result<Response, Response> {
    let host = host_of(request.headers()).unwrap_or_default().to_string();
    if !guard.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        return Err(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this host name is not served here",
        ));
    }
    let access = &guard.shared.access;
    if request.uri().path() == "/login" {
        return Ok(login(access, &request));
    }
    if !has_cookie(access, request.headers()) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "not signed in: open the address `coordctl console` printed",
        ));
    }
    let request = if request.method() == Method::POST {
        mutation(guard, request, &host).await?
    } else {
        request
    };
    Ok(next.run(request).await)
}

fn host_of(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST)?.to_str().ok()
}

/// `/login?token=T`: the cookie for a right token (and on to the services),
/// 401 for any other.
fn login(access: &Access, request: &Request) -> Response {
    let given = request
        .uri()
        .query()
        .and_then(|q| {
            serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "token")
        })
        .map(|(_, v)| v);
    match given {
        Some(t) if same(t.as_bytes(), access.token().as_bytes()) => {
            let cookie = format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                access.token()
            );
            let mut response = Redirect::to("/services").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        _ => refuse(StatusCode::UNAUTHORIZED, "wrong or missing token"),
    }
}

fn has_cookie(access: &Access, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && same(value.as_bytes(), access.token().as_bytes()))
}

/// A `POST`: refused when read-only, from another origin, not a form, or
/// without the CSRF token; else the request, its body read and put back.
async fn mutation(guard: &Guard, request: Request, host: &str) -> Result<Request, Response> {
    let shared = &guard.shared;
    if shared.read_only {
        return Err(refuse(StatusCode::FORBIDDEN, "this console is read-only"));
    }
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let same_origin = match origin {
        Some(o) => o.eq_ignore_ascii_case(&format!("http://{host}")),
        None => site == Some("same-origin"),
    };
    if !same_origin || site.is_some_and(|s| s != "same-origin") {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "a change must come from this console's own pages",
        ));
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a change is sent as a form",
        ));
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| refuse(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "the form does not parse"))?;
    let csrf = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_bytes());
    if !csrf.is_some_and(|t| same(t, shared.access.csrf().as_bytes())) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or stale: reload the page",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// A short plain page with `status`.
fn refuse(status: StatusCode, why: &str) -> Response {
    (status, crate::page::bare(status, why)).into_response()
}

/// What every response carries.
fn harden(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::CACHE_CONTROL, "no-store");
    // Not `no-referrer`: under it, browsers send `Origin: null` with a form
    // post, and the origin check refuses the console's own pages.
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_checked() {
        let a = Access::new(None).unwrap();
        let b = Access::new(None).unwrap();
        assert_eq!(a.token().len(), 64);
        assert_ne!(a.token(), b.token());
        assert_ne!(a.token(), a.csrf());
        assert!(Access::new(Some("short".into())).is_err());
        assert!(
            Access::new(Some("sixteen chars ok".into())).is_err(),
            "whitespace"
        );
        assert!(Access::new(Some("sixteen-chars-ok".into())).is_ok());
    }

    #[test]
    fn same_compares_whole_values() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }
}
