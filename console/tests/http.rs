//! The console at the HTTP level, in process, on the memory backend: access
//! (token, cookie, host, origin, CSRF, read-only), every page, every
//! mutation's compare-and-set, inert markup, and the live parts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use coordkit::{Backend, BackendExt, Coordinator, RangeRequest, ServiceInfo};
use coordkit_console::{ClusterReport, ClusterView, Console, ConsoleOptions, Member, MemberStatus};
use coordkit_memory::MemoryBackend;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use tower::ServiceExt;

const LOCAL: &str = "127.0.0.1:4999";
const ORIGIN: &str = "http://127.0.0.1:4999";
const TTL: Duration = Duration::from_secs(30);

/// A console on a fresh memory store, signed in.
struct Harness {
    /// The store, through the coordinator's own handle (a partition cuts it off).
    store: MemoryBackend,
    coordinator: Coordinator,
    console: Console,
    router: Router,
    cookie: String,
}

/// An answer, its body read whole.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Harness {
    fn new() -> Self {
        Self::with(ConsoleOptions::new())
    }

    fn with(options: ConsoleOptions) -> Self {
        let store = MemoryBackend::new().client();
        let coordinator = Coordinator::new(Arc::new(store.clone()));
        let console = Console::new(coordinator.clone(), options).unwrap();
        let router = console.router(LOCAL.parse::<SocketAddr>().unwrap());
        let cookie = format!("coordkit_console={}", console.token());
        Harness {
            store,
            coordinator,
            console,
            router,
            cookie,
        }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    fn signed(&self, method: Method, path: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, LOCAL)
            .header(header::COOKIE, &self.cookie)
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.signed(Method::GET, path).body(Body::empty()).unwrap())
            .await
    }

    /// The CSRF token, as an edit form carries it.
    async fn csrf(&self) -> String {
        let page = self.get("/config/edit?prefix=").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        field(&page.body, "csrf").expect("the form carries a CSRF token")
    }

    /// A form post as the console's own page sends it: this origin, the CSRF
    /// token, a form body.
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let csrf = self.csrf().await;
        let mut all = fields.to_vec();
        all.push(("csrf", &csrf));
        self.post_raw(path, &all, |r| r.header(header::ORIGIN, ORIGIN))
            .await
    }

    /// A form post with exactly `fields`, shaped by `shape`.
    async fn post_raw(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        shape: impl FnOnce(axum::http::request::Builder) -> axum::http::request::Builder,
    ) -> Reply {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let request = shape(
            self.signed(Method::POST, path)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
        );
        self.send(request.body(Body::from(body)).unwrap()).await
    }

    async fn revision(&self) -> i64 {
        self.store
            .range(RangeRequest::key("any"))
            .await
            .unwrap()
            .revision
    }

    async fn set(&self, key: &str, json: &str) -> i64 {
        self.coordinator
            .config()
            .set_bytes(key, json.as_bytes().to_vec())
            .await
            .unwrap()
    }

    async fn value(&self, key: &str) -> Option<String> {
        match self.coordinator.config().get_bytes_with_version(key).await {
            Ok((bytes, _)) => Some(String::from_utf8(bytes).unwrap()),
            Err(coordkit::Error::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The value of the first form field named `name` in `html`.
fn field(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Where a redirect goes.
fn location(reply: &Reply) -> &str {
    reply
        .headers
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// Every route, as (method, path); mutations with a body that would apply.
const GETS: &[&str] = &[
    "/",
    "/services",
    "/services/api",
    "/services/api/a1/deregister",
    "/config",
    "/config/key?k=app/db",
    "/config/edit?k=app/db",
    "/config/delete?k=app/db",
    "/config/history?k=app/db",
    "/config/rollback?k=app/db&to=2&expected=3",
    "/locks",
    "/cluster",
    "/live/services",
    "/live/services/api",
    "/live/queues/locks",
    "/assets/console.js",
    "/assets/console.css",
];

/// Every mutating route with a form that would change the store, given a
/// store holding `app/db` (versions `v1`, `v2`) and instance `api/a1` at
/// revision `r`.
fn mutations(v1: i64, v2: i64, r: i64) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    vec![
        (
            "/config/publish",
            vec![
                ("key", "app/db".into()),
                ("version", v2.to_string()),
                ("value", "{\"pool\":99}".into()),
            ],
        ),
        (
            "/config/publish",
            vec![
                ("key", "app/new".into()),
                ("version", "0".into()),
                ("value", "1".into()),
            ],
        ),
        (
            "/config/delete",
            vec![("key", "app/db".into()), ("version", v2.to_string())],
        ),
        (
            "/config/rollback",
            vec![
                ("key", "app/db".into()),
                ("to", v1.to_string()),
                ("expected", v2.to_string()),
            ],
        ),
        (
            "/services/api/a1/deregister",
            vec![("revision", r.to_string())],
        ),
    ]
}

/// `app/db` at two versions and `api/a1` registered: (v1, v2, revision of a1,
/// the registration to keep).
async fn populated(h: &Harness) -> (i64, i64, i64, coordkit::Registration) {
    let v1 = h.set("app/db", "{\"pool\":5}").await;
    let v2 = h.set("app/db", "{\"pool\":6}").await;
    let registration = h
        .coordinator
        .registry()
        .register(ServiceInfo::new("a1", "api", "10.0.0.1", 8080), TTL)
        .await
        .unwrap();
    let kv = h
        .store
        .get(h.coordinator.keys().instance("api", "a1"))
        .await
        .unwrap()
        .unwrap();
    (v1, v2, kv.mod_revision, registration)
}

fn pairs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn every_route_answers_401_without_the_cookie_and_changes_nothing() {
    let h = Harness::new();
    let (v1, v2, r, _registration) = populated(&h).await;
    let csrf = h.csrf().await;
    let before = h.revision().await;
    for cookie in [
        None,
        Some("coordkit_console=0123456789abcdef0123456789abcdef"),
    ] {
        for path in GETS {
            let mut request = Request::get(*path).header(header::HOST, LOCAL);
            if let Some(c) = cookie {
                request = request.header(header::COOKIE, c);
            }
            let reply = h.send(request.body(Body::empty()).unwrap()).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "GET {path} with {cookie:?}"
            );
        }
        for (path, fields) in mutations(v1, v2, r) {
            let mut fields = pairs(&fields);
            fields.push(("csrf", &csrf));
            let body = serde_urlencoded::to_string(&fields).unwrap();
            let mut request = Request::post(path)
                .header(header::HOST, LOCAL)
                .header(header::ORIGIN, ORIGIN)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            if let Some(c) = cookie {
                request = request.header(header::COOKIE, c);
            }
            let reply = h.send(request.body(Body::from(body)).unwrap()).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "POST {path} with {cookie:?}"
            );
        }
    }
    assert_eq!(h.revision().await, before, "nothing was written");
}

#[tokio::test]
async fn login_gives_an_http_only_strict_cookie_for_the_token_only() {
    let h = Harness::new();
    let login = |path: String| {
        Request::get(path)
            .header(header::HOST, LOCAL)
            .body(Body::empty())
            .unwrap()
    };
    let reply = h.send(login(h.console.login_path())).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), "/services");
    let cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with(&format!("coordkit_console={};", h.console.token())));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie} has {flag}");
    }
    for wrong in ["/login", "/login?token=", "/login?token=0123456789abcdef"] {
        let reply = h.send(login(wrong.to_string())).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert!(reply.headers.get(header::SET_COOKIE).is_none(), "{wrong}");
    }
    let token = h.console.token().to_string();
    let wrong_case = format!("/login?token={}", token.to_uppercase());
    assert_eq!(
        h.send(login(wrong_case)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_fixed_token_opens_the_console_and_a_weak_one_is_refused() {
    let options = ConsoleOptions::new().token("a-fixed-token-of-24-chars");
    let h = Harness::with(options);
    assert_eq!(h.console.token(), "a-fixed-token-of-24-chars");
    assert_eq!(h.get("/services").await.status, StatusCode::OK);
    for weak in ["short", "has a space in it ok"] {
        let store = MemoryBackend::new();
        let c = Coordinator::new(Arc::new(store.client()));
        assert!(
            Console::new(c, ConsoleOptions::new().token(weak)).is_err(),
            "{weak}"
        );
    }
}

/// `GET /services` signed in, with `Host: host`.
fn at_host(h: &Harness, host: &str) -> Request<Body> {
    Request::get("/services")
        .header(header::HOST, host)
        .header(header::COOKIE, &h.cookie)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_foreign_host_is_refused_even_with_the_cookie() {
    let h = Harness::with(ConsoleOptions::new().allow_host("console.example:8080"));
    for host in [
        "evil.example:4999",
        "127.0.0.1:5000",
        "localhost",
        "127.0.0.1.evil.example:4999",
    ] {
        let reply = h.send(at_host(&h, host)).await;
        assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        let login = Request::get(h.console.login_path()).header(header::HOST, host);
        let reply = h.send(login.body(Body::empty()).unwrap()).await;
        assert_eq!(
            reply.status,
            StatusCode::MISDIRECTED_REQUEST,
            "login via {host}"
        );
    }
    let no_host = Request::get("/services").header(header::COOKIE, &h.cookie);
    assert_eq!(
        h.send(no_host.body(Body::empty()).unwrap()).await.status,
        StatusCode::MISDIRECTED_REQUEST
    );
    for host in [
        "localhost:4999",
        "127.0.0.1:4999",
        "[::1]:4999",
        "console.example:8080",
    ] {
        assert_eq!(
            h.send(at_host(&h, host)).await.status,
            StatusCode::OK,
            "{host}"
        );
    }
}

#[tokio::test]
async fn a_mutation_from_elsewhere_is_refused_and_changes_nothing() {
    let h = Harness::new();
    let v = h.set("app/db", "{\"pool\":5}").await;
    let csrf = h.csrf().await;
    let version = v.to_string();
    let fields = [
        ("key", "app/db"),
        ("version", &version),
        ("value", "{\"pool\":9}"),
        ("csrf", &csrf),
    ];
    type Shape = fn(axum::http::request::Builder) -> axum::http::request::Builder;
    let refused: [(&str, Shape); 6] = [
        ("a foreign Origin", |r| {
            r.header(header::ORIGIN, "http://evil.example")
        }),
        ("an Origin on another port", |r| {
            r.header(header::ORIGIN, "http://127.0.0.1:5000")
        }),
        ("https instead of http", |r| {
            r.header(header::ORIGIN, "https://127.0.0.1:4999")
        }),
        ("an opaque origin", |r| r.header(header::ORIGIN, "null")),
        ("no Origin and no Sec-Fetch-Site", |r| r),
        ("a cross-site fetch with this Origin", |r| {
            r.header(header::ORIGIN, ORIGIN)
                .header("sec-fetch-site", "cross-site")
        }),
    ];
    for (what, shape) in refused {
        let reply = h.post_raw("/config/publish", &fields, shape).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}");
    }
    let refused_sites: [(&str, Shape); 2] = [
        ("no Origin, Sec-Fetch-Site same-site", |r| {
            r.header("sec-fetch-site", "same-site")
        }),
        ("no Origin, Sec-Fetch-Site none", |r| {
            r.header("sec-fetch-site", "none")
        }),
    ];
    for (what, shape) in refused_sites {
        let reply = h.post_raw("/config/publish", &fields, shape).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}");
    }
    assert_eq!(h.value("app/db").await.unwrap(), "{\"pool\":5}");
    // A browser that sends no Origin but says the request is same-origin passes.
    let reply = h
        .post_raw("/config/publish", &fields, |r| {
            r.header("sec-fetch-site", "same-origin")
        })
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(h.value("app/db").await.unwrap(), "{\"pool\":9}");
}

#[tokio::test]
async fn a_mutation_without_the_right_csrf_token_is_refused() {
    let h = Harness::new();
    let v = h.set("app/db", "{\"pool\":5}").await.to_string();
    let base = [
        ("key", "app/db"),
        ("version", v.as_str()),
        ("value", "{\"pool\":9}"),
    ];
    let origin = |r: axum::http::request::Builder| r.header(header::ORIGIN, ORIGIN);
    let reply = h.post_raw("/config/publish", &base, origin).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "no token");
    let mut wrong = base.to_vec();
    wrong.push(("csrf", h.console.token()));
    let reply = h.post_raw("/config/publish", &wrong, origin).await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "the login token is not the CSRF token"
    );
    let mut empty = base.to_vec();
    empty.push(("csrf", ""));
    assert_eq!(
        h.post_raw("/config/publish", &empty, origin).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(h.value("app/db").await.unwrap(), "{\"pool\":5}");
}

#[tokio::test]
async fn a_mutation_must_be_a_form_post() {
    let h = Harness::new();
    let v = h.set("app/db", "{\"pool\":5}").await.to_string();
    let csrf = h.csrf().await;
    let fields = [
        ("key", "app/db"),
        ("version", v.as_str()),
        ("value", "{\"pool\":9}"),
        ("csrf", &csrf),
    ];
    let body = serde_urlencoded::to_string(fields).unwrap();
    for content_type in [
        "text/plain",
        "application/json",
        "multipart/form-data; boundary=x",
    ] {
        let request = h
            .signed(Method::POST, "/config/publish")
            .header(header::ORIGIN, ORIGIN)
            .header(header::CONTENT_TYPE, content_type);
        let reply = h
            .send(request.body(Body::from(body.clone())).unwrap())
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
    }
    let request = h
        .signed(Method::POST, "/config/publish")
        .header(header::ORIGIN, ORIGIN);
    let reply = h.send(request.body(Body::from(body)).unwrap()).await;
    assert_eq!(
        reply.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "no content type"
    );
    for path in ["/config/publish", "/config/review"] {
        assert_eq!(
            h.get(path).await.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "GET {path}"
        );
    }
    let request = h
        .signed(Method::PUT, "/config/delete")
        .header(header::ORIGIN, ORIGIN);
    let reply = h.send(request.body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "PUT");
    let huge = "x".repeat(2 << 20);
    let reply = h
        .post_raw(
            "/config/publish",
            &[("value", &huge), ("csrf", &csrf)],
            |r| r.header(header::ORIGIN, ORIGIN),
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.value("app/db").await.unwrap(), "{\"pool\":5}");
}

#[tokio::test]
async fn read_only_refuses_every_mutation_and_the_store_does_not_move() {
    let h = Harness::with(ConsoleOptions::new().read_only(true));
    let (v1, v2, r, _registration) = populated(&h).await;
    let before = h.revision().await;
    for (path, fields) in mutations(v1, v2, r) {
        let mut fields = pairs(&fields);
        fields.push(("csrf", "whatever the page had"));
        let reply = h
            .post_raw(path, &fields, |r| r.header(header::ORIGIN, ORIGIN))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "POST {path}");
        assert!(reply.body.contains("read-only"), "{}", reply.body);
    }
    assert_eq!(h.revision().await, before);
    assert_eq!(
        h.get("/config/edit?k=app/db").await.status,
        StatusCode::FORBIDDEN
    );
    for path in [
        "/config/key?k=app/db",
        "/services/api",
        "/services/api/a1/deregister",
        "/config/delete?k=app/db",
        "/config/history?k=app/db",
        "/config",
    ] {
        let page = h.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            !page.body.contains("method=\"post\""),
            "{path} shows no form"
        );
        assert!(
            !page.body.contains("name=\"csrf\""),
            "{path} carries no token"
        );
        assert!(
            page.body.contains("id=\"read-only\""),
            "{path} says read-only"
        );
        for link in ["/config/edit", "/deregister\"", "Roll back to this"] {
            assert!(!page.body.contains(link), "{path} links {link}");
        }
    }
}

#[tokio::test]
async fn every_answer_carries_the_hardening_headers() {
    let h = Harness::new();
    let foreign = Request::get("/")
        .header(header::HOST, "evil.example")
        .body(Body::empty())
        .unwrap();
    let anonymous = Request::get("/")
        .header(header::HOST, LOCAL)
        .body(Body::empty())
        .unwrap();
    let mut replies = vec![h.send(foreign).await, h.send(anonymous).await];
    for path in [
        "/services",
        "/assets/console.js",
        "/assets/nope.js",
        "/nowhere",
        "/config/key?k=absent",
    ] {
        replies.push(h.get(path).await);
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, [421, 401, 200, 200, 404, 404, 404]);
    for reply in &replies {
        let csp = reply.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(reply.headers[header::X_FRAME_OPTIONS], "DENY");
        // Not no-referrer: under it a browser's form post says `Origin: null`.
        assert_eq!(reply.headers[header::REFERRER_POLICY], "same-origin");
    }
    let page = h.get("/services").await;
    assert!(!page.body.contains("<script>"), "no inline script");
    assert!(page.body.contains("<script src=\"/assets/console.js\""));
    assert_eq!(
        h.get("/assets/console.js").await.headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
}

#[tokio::test]
async fn an_edit_is_reviewed_as_a_diff_then_published_over_the_version_loaded() {
    let h = Harness::new();
    let v = h.set("app/db", "{\"pool\":5,\"host\":\"db1\"}").await;
    let form = h.get("/config/edit?k=app/db").await;
    assert_eq!(form.status, StatusCode::OK);
    assert_eq!(field(&form.body, "version").unwrap(), v.to_string());
    assert!(form.body.contains("data-codec=\"json\""));
    let version = v.to_string();
    let edited = [
        ("key", "app/db"),
        ("version", version.as_str()),
        ("value", "{\"pool\":10,\"host\":\"db1\"}"),
    ];
    let review = h.post("/config/review", &edited).await;
    assert_eq!(review.status, StatusCode::OK, "{}", review.body);
    assert!(review.body.contains("<del>"), "{}", review.body);
    assert!(
        review.body.contains("<del>-   &quot;pool&quot;: 5</del>"),
        "old line: {}",
        review.body
    );
    assert!(
        review.body.contains("<ins>+   &quot;pool&quot;: 10</ins>"),
        "new line"
    );
    assert!(review.body.contains("action=\"/config/publish\""));
    assert_eq!(
        h.value("app/db").await.unwrap(),
        "{\"pool\":5,\"host\":\"db1\"}",
        "a review writes nothing"
    );
    let publish = h.post("/config/publish", &edited).await;
    assert_eq!(publish.status, StatusCode::SEE_OTHER, "{}", publish.body);
    assert_eq!(location(&publish), "/config/key?k=app/db");
    assert_eq!(
        h.value("app/db").await.unwrap(),
        "{\"pool\":10,\"host\":\"db1\"}"
    );
    let view = h.get("/config/key?k=app/db").await;
    assert!(
        view.body.contains("  &quot;pool&quot;: 10"),
        "pretty-printed: {}",
        view.body
    );
}

#[tokio::test]
async fn an_edit_over_a_version_that_moved_shows_theirs_against_yours_and_writes_nothing() {
    let h = Harness::new();
    let loaded = h.set("app/db", "{\"pool\":5}").await.to_string();
    h.set("app/db", "{\"pool\":7}").await;
    let mine = [
        ("key", "app/db"),
        ("version", loaded.as_str()),
        ("value", "{\"pool\":10}"),
    ];
    for path in ["/config/review", "/config/publish"] {
        let before = h.revision().await;
        let reply = h.post(path, &mine).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{path}: {}", reply.body);
        assert!(reply.body.contains("id=\"conflict\""));
        assert!(
            reply.body.contains("<del>-   &quot;pool&quot;: 7</del>"),
            "theirs: {}",
            reply.body
        );
        assert!(
            reply.body.contains("<ins>+   &quot;pool&quot;: 10</ins>"),
            "yours"
        );
        assert!(reply.body.contains("Nothing was written"));
        assert_eq!(h.revision().await, before, "{path} wrote nothing");
    }
    assert_eq!(h.value("app/db").await.unwrap(), "{\"pool\":7}");
    // Deleted behind the page: a conflict too, and nothing is created.
    let v = h
        .coordinator
        .config()
        .get_bytes_with_version("app/db")
        .await
        .unwrap()
        .1;
    h.coordinator
        .config()
        .delete_if_version("app/db", v)
        .await
        .unwrap();
    let reply = h.post("/config/publish", &mine).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(reply.body.contains("deleted"));
    assert_eq!(h.value("app/db").await, None);
}

#[tokio::test]
async fn a_new_key_is_created_only_if_absent_and_only_in_its_codec() {
    let h = Harness::new();
    let new = [
        ("key", "app/flags"),
        ("version", "0"),
        ("value", "{\"beta\":true}"),
    ];
    let reply = h.post("/config/publish", &new).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(h.value("app/flags").await.unwrap(), "{\"beta\":true}");
    let again = [
        ("key", "app/flags"),
        ("version", "0"),
        ("value", "{\"beta\":false}"),
    ];
    assert_eq!(
        h.post("/config/publish", &again).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(h.value("app/flags").await.unwrap(), "{\"beta\":true}");
    let before = h.revision().await;
    for path in ["/config/review", "/config/publish"] {
        let invalid = [
            ("key", "app/other"),
            ("version", "0"),
            ("value", "{not json"),
        ];
        let reply = h.post(path, &invalid).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(reply.body.contains("not valid json"), "{}", reply.body);
        let bad_key = [("key", "/abs"), ("version", "0"), ("value", "1")];
        assert_eq!(
            h.post(path, &bad_key).await.status,
            StatusCode::BAD_REQUEST,
            "{path}"
        );
    }
    let missing_field = h.post("/config/publish", &[("key", "app/x")]).await;
    assert!(
        missing_field.status.is_client_error(),
        "{}",
        missing_field.status
    );
    assert_eq!(h.revision().await, before);
}

#[tokio::test]
async fn the_tree_groups_folders_and_pages_and_searches_on_the_server() {
    let h = Harness::new();
    let config = h.coordinator.config();
    for i in 0..250 {
        config
            .set_bytes(&format!("big/k-{i:03}"), b"1".to_vec())
            .await
            .unwrap();
    }
    for key in ["big/sub/a", "big/sub/b", "top"] {
        config.set_bytes(key, b"2".to_vec()).await.unwrap();
    }
    let root = h.get("/config").await;
    assert!(root.body.contains("big/</a> (252)"), "{}", root.body);
    assert!(root.body.contains("?k=top\""));
    let first = h.get("/config?prefix=big/").await;
    assert!(
        first.body.contains("251 entries · page 1 of 3"),
        "{}",
        first.body
    );
    assert_eq!(
        first.body.matches("class=\"key\"").count(),
        99,
        "one folder, then 99 keys"
    );
    assert!(first.body.contains("big/sub/</a> (2)"));
    assert!(first.body.contains("rel=\"next\"") && !first.body.contains("rel=\"prev\""));
    let last = h.get("/config?prefix=big/&page=3").await;
    assert_eq!(last.body.matches("class=\"key\"").count(), 51);
    assert!(last.body.contains("?k=big/k-249\"") && !last.body.contains("rel=\"next\""));
    let beyond = h.get("/config?prefix=big/&page=99").await;
    assert!(beyond.body.contains("page 3 of 3"), "clamped");
    let found = h.get("/config?prefix=big/&q=k-12").await;
    assert!(
        found.body.contains("10 entries"),
        "k-120..k-129: {}",
        found.body
    );
    assert!(
        !found.body.contains("class=\"folder\""),
        "a search lists keys flat"
    );
    assert_eq!(
        h.get("/config?prefix=big").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn history_compares_any_two_versions_and_says_where_it_ends() {
    let h = Harness::new();
    let v1 = h.set("app/db", "{\"pool\":1}").await;
    let v2 = h.set("app/db", "{\"pool\":2}").await;
    let v3 = h.set("app/db", "{\"pool\":3}").await;
    let page = h.get("/config/history?k=app/db").await;
    assert_eq!(page.status, StatusCode::OK);
    for v in [v1, v2, v3] {
        assert!(page.body.contains(&format!("data-version=\"{v}\"")), "{v}");
    }
    assert!(
        page.body.contains("id=\"created\""),
        "ends at the creation: {}",
        page.body
    );
    let compared = h
        .get(&format!("/config/history?k=app/db&a={v1}&b={v3}"))
        .await;
    assert!(compared
        .body
        .contains(&format!("Version {v1} against version {v3}")));
    assert!(
        compared.body.contains("<del>-   &quot;pool&quot;: 1</del>"),
        "{}",
        compared.body
    );
    assert!(compared.body.contains("<ins>+   &quot;pool&quot;: 3</ins>"));
    let unknown = h
        .get(&format!("/config/history?k=app/db&a={v1}&b=999"))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    h.store.compact_now();
    let v4 = h.set("app/db", "{\"pool\":4}").await;
    let after = h.get("/config/history?k=app/db").await;
    assert!(after.body.contains("id=\"compacted\""), "{}", after.body);
    assert!(after.body.contains(&format!("data-version=\"{v4}\"")));
    assert!(
        !after.body.contains(&format!("data-version=\"{v1}\"")),
        "compacted away"
    );
}

#[tokio::test]
async fn a_rollback_says_what_it_restores_and_compares_on_the_version_shown() {
    let h = Harness::new();
    let v1 = h.set("app/db", "{\"pool\":1}").await;
    let v2 = h.set("app/db", "{\"pool\":2}").await;
    let confirm = h
        .get(&format!("/config/rollback?k=app/db&to={v1}&expected={v2}"))
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm
            .body
            .contains(&format!("Write the value of version <strong>{v1}</strong>")),
        "{}",
        confirm.body
    );
    assert!(confirm
        .body
        .contains(&format!("over version <strong>{v2}</strong>")));
    assert!(
        confirm.body.contains("<ins>+   &quot;pool&quot;: 1</ins>"),
        "restored value shown"
    );
    let (to, expected) = (v1.to_string(), v2.to_string());
    let v3 = h.set("app/db", "{\"pool\":3}").await;
    let stale = h
        .get(&format!("/config/rollback?k=app/db&to={v1}&expected={v2}"))
        .await;
    assert!(
        stale.body.contains(&format!("now at version {v3}")),
        "the page warns"
    );
    let before = h.revision().await;
    let reply = h
        .post(
            "/config/rollback",
            &[("key", "app/db"), ("to", &to), ("expected", &expected)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(h.revision().await, before);
    assert_eq!(h.value("app/db").await.unwrap(), "{\"pool\":3}");
    let current = v3.to_string();
    let reply = h
        .post(
            "/config/rollback",
            &[("key", "app/db"), ("to", &to), ("expected", &current)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(h.value("app/db").await.unwrap(), "{\"pool\":1}");
    let not_a_version = h
        .post(
            "/config/rollback",
            &[("key", "app/db"), ("to", "0"), ("expected", &current)],
        )
        .await;
    assert_eq!(not_a_version.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_delete_is_confirmed_and_compares_on_the_version_shown() {
    let h = Harness::new();
    let shown = h.set("app/db", "{\"pool\":1}").await.to_string();
    let confirm = h.get("/config/delete?k=app/db").await;
    assert_eq!(field(&confirm.body, "version").unwrap(), shown);
    h.set("app/db", "{\"pool\":2}").await;
    let reply = h
        .post("/config/delete", &[("key", "app/db"), ("version", &shown)])
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(h.value("app/db").await.unwrap(), "{\"pool\":2}");
    let confirm = h.get("/config/delete?k=app/db").await;
    let now = field(&confirm.body, "version").unwrap();
    let reply = h
        .post("/config/delete", &[("key", "app/db"), ("version", &now)])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&reply), "/config?prefix=app/");
    assert_eq!(h.value("app/db").await, None);
    assert_eq!(
        h.get("/config/key?k=app/db").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn services_show_instances_and_deregister_on_the_revision_shown() {
    let h = Harness::new();
    let registry = h.coordinator.registry();
    let info = ServiceInfo::new("a1", "api", "10.0.0.1", 8080)
        .with_tag("blue")
        .with_metadata("zone", "eu-1")
        .with_weight(3);
    let _a1 = registry.register(info, TTL).await.unwrap();
    let _a2 = registry
        .register(
            ServiceInfo::new("a2", "api", "10.0.0.2", 8080)
                .with_health(coordkit::InstanceHealth::Critical),
            TTL,
        )
        .await
        .unwrap();
    let _w = registry
        .register(ServiceInfo::new("w1", "web", "10.0.0.3", 80), TTL)
        .await
        .unwrap();
    let index = h.get("/services").await;
    assert!(
        index.body.contains("data-service=\"api\""),
        "{}",
        index.body
    );
    assert!(index.body.contains("<td class=\"count\">2</td><td class=\"passing\">1</td><td class=\"warning\">0</td><td class=\"critical\">1</td>"), "{}", index.body);
    assert!(index.body.contains("data-live=\"/live/services\""));
    let api = h.get("/services/api").await;
    for shown in [
        "data-instance=\"a1\"",
        "data-instance=\"a2\"",
        "10.0.0.1",
        "blue",
        "zone=eu-1",
        "<td>3</td>",
        "data-ttl=\"",
    ] {
        assert!(api.body.contains(shown), "{shown}: {}", api.body);
    }
    assert!(!api.body.contains("data-instance=\"w1\""));
    registry
        .register_persistent(ServiceInfo::new("db-1", "api", "10.0.0.9", 5432))
        .await
        .unwrap();
    let with_db = h.get("/services/api").await;
    assert!(
        with_db.body.contains("<span class=\"persistent\""),
        "a persistent instance is marked: {}",
        with_db.body
    );
    let confirm = h.get("/services/api/a1/deregister").await;
    let shown = field(&confirm.body, "revision").unwrap();
    _a1.update(|i| i.weight = 4).await.unwrap();
    let key = h.coordinator.keys().instance("api", "a1");
    let reply = h
        .post("/services/api/a1/deregister", &[("revision", &shown)])
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert!(
        h.store.get(key.clone()).await.unwrap().is_some(),
        "still registered"
    );
    // A prober's verdict is folded in: a1 reads critical, probed.
    let target = registry.probe_targets("api").await.unwrap();
    let a1 = target.iter().find(|t| t.info.id == "a1").unwrap();
    let verdict = coordkit::ProbeVerdict::new(
        coordkit::InstanceHealth::Critical,
        a1.create_revision,
        1,
        "connection refused",
        "prober-x",
    );
    assert!(registry.record_verdict(a1, &verdict, None).await.unwrap());
    let probed = h.get("/services/api").await.body;
    assert!(
        probed.contains(
            "title=\"probed by prober-x: connection refused\">critical <span class=\"probed\">"
        ),
        "{probed}"
    );
    let counts = h.get("/services").await.body;
    // One critical by its own word, a1 by its verdict.
    assert!(counts.contains("<td class=\"critical\">2</td>"), "{counts}");
    let confirm = h.get("/services/api/a1/deregister").await;
    let now = field(&confirm.body, "revision").unwrap();
    let reply = h
        .post("/services/api/a1/deregister", &[("revision", &now)])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(h.store.get(key).await.unwrap().is_none());
    assert!(
        h.store
            .get(h.coordinator.keys().id_index_entry("a1", "api"))
            .await
            .unwrap()
            .is_none(),
        "id index entry gone"
    );
    let verdict_key = h.coordinator.keys().probe_verdict("api", "a1");
    assert!(
        h.store.get(verdict_key).await.unwrap().is_none(),
        "verdict gone"
    );
    assert_eq!(
        h.get("/services/api/zz/deregister").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/services/a%2Fb").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_locks_page_shows_holders_waiters_tokens_and_leaders() {
    let h = Harness::new();
    let other = Coordinator::new(Arc::new(h.store.client()));
    let held = h.coordinator.lock().acquire("report", TTL).await.unwrap();
    let waiting = {
        let other = other.clone();
        tokio::spawn(async move { other.lock().acquire("report", TTL).await })
    };
    let lock = h.coordinator.lock();
    let mut queue = lock.holders_and_waiters("report").await.unwrap();
    for _ in 0..500 {
        if queue.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        queue = lock.holders_and_waiters("report").await.unwrap();
    }
    assert_eq!(queue.len(), 2, "the waiter queued");
    let _leader = h
        .coordinator
        .election()
        .campaign("primary", "node-a")
        .await
        .unwrap();
    let page = h.get("/locks").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("data-queue=\"report\""), "{}", page.body);
    let holder = format!(
        "data-token=\"{}\"><td>1</td><td class=\"role\">holder</td>",
        held.fencing_token()
    );
    assert!(page.body.contains(&holder), "{}", page.body);
    let waiter = format!(
        "data-token=\"{}\"><td>2</td><td class=\"role\">waiting</td>",
        queue[1].fencing_token
    );
    assert!(page.body.contains(&waiter), "{}", page.body);
    assert!(page.body.contains("data-queue=\"primary\"") && page.body.contains("node-a"));
    assert!(page.body.contains("<td class=\"role\">leader</td>"));
    for kind in ["locks", "semaphores", "elections"] {
        assert!(page
            .body
            .contains(&format!("data-live=\"/live/queues/{kind}\"")));
    }
    waiting.abort();
    drop(held);
}

#[tokio::test]
async fn keys_and_values_with_markup_render_inert() {
    let h = Harness::new();
    let key = "x/<script>alert(1)</script>";
    h.set(key, "\"<img src=x onerror=alert(2)>\"").await;
    let info = ServiceInfo::new("<b>id", "svc", "10.0.0.9", 1)
        .with_tag("<svg onload=alert(3)>")
        .with_metadata("<i>k</i>", "<u>v</u>");
    let _r = h.coordinator.registry().register(info, TTL).await.unwrap();
    let url_key = "x/%3Cscript%3Ealert(1)%3C/script%3E";
    let pages = [
        format!("/config/key?k={url_key}"),
        "/config?prefix=x/".to_string(),
        format!("/config/history?k={url_key}"),
        format!("/config/edit?k={url_key}"),
        format!("/config/delete?k={url_key}"),
        "/services/svc".to_string(),
    ];
    for path in &pages {
        let page = h.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        for live in ["<script>alert", "<img", "<svg", "<b>id", "<i>k", "<u>v"] {
            assert!(!page.body.contains(live), "{path} renders {live} live");
        }
    }
    let view = h.get(&pages[0]).await;
    assert!(view.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(view.body.contains("&lt;img src=x onerror=alert(2)&gt;"));
    assert!(h
        .get("/services/svc")
        .await
        .body
        .contains("&lt;svg onload=alert(3)&gt;"));
}

#[tokio::test]
async fn a_value_that_is_not_utf8_is_shown_as_hex_and_not_edited() {
    let h = Harness::new();
    let root = h.coordinator.config().root().to_string();
    h.store
        .put(format!("{root}bin/blob"), vec![0xff, 0x00, 0x41])
        .await
        .unwrap();
    let view = h.get("/config/key?k=bin/blob").await;
    assert_eq!(view.status, StatusCode::OK);
    assert!(view.body.contains("ff 00 41"), "{}", view.body);
    assert!(view.body.contains("shown as hex"));
    assert!(!view.body.contains("id=\"edit\""));
    assert_eq!(
        h.get("/config/edit?k=bin/blob").await.status,
        StatusCode::BAD_REQUEST
    );
}

/// The next server-sent event's data on `body`.
async fn next_event(body: &mut Body) -> String {
    let mut text = String::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("an event within the guard time")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        if let Some(end) = text.find("\n\n") {
            let event = &text[..end];
            if event.starts_with(':') {
                text.drain(..end + 2);
                continue;
            }
            assert!(event.starts_with("event: part\n"), "{event}");
            return event
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n");
        }
    }
}

#[tokio::test]
async fn a_live_part_is_sent_at_once_then_after_each_change_until_the_console_closes() {
    let h = Harness::new();
    let request = h
        .signed(Method::GET, "/live/services/api")
        .body(Body::empty())
        .unwrap();
    let response = h.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let first = next_event(&mut body).await;
    assert!(first.contains("No instance of api"), "{first}");
    let registration = h
        .coordinator
        .registry()
        .register(ServiceInfo::new("a1", "api", "10.0.0.1", 8080), TTL)
        .await
        .unwrap();
    let mut part = next_event(&mut body).await;
    while !part.contains("data-instance=\"a1\"") {
        part = next_event(&mut body).await;
    }
    registration.deregister().await.unwrap();
    let mut part = next_event(&mut body).await;
    while part.contains("data-instance=\"a1\"") {
        part = next_event(&mut body).await;
    }
    assert!(part.contains("No instance of api"), "{part}");
    h.console.close_live_parts();
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ends when the console closes");
}

#[tokio::test]
async fn a_live_part_follows_again_after_its_watch_is_cut() {
    let h = Harness::new();
    let request = h
        .signed(Method::GET, "/live/queues/locks")
        .body(Body::empty())
        .unwrap();
    let mut body = h.router.clone().oneshot(request).await.unwrap().into_body();
    assert!(next_event(&mut body).await.contains("None held"));
    h.store.cut_watches();
    let _held = h
        .coordinator
        .lock()
        .acquire("after-cut", TTL)
        .await
        .unwrap();
    let mut part = next_event(&mut body).await;
    while !part.contains("data-queue=\"after-cut\"") {
        part = next_event(&mut body).await;
    }
    assert_eq!(
        h.get("/live/queues/nonsense").await.status,
        StatusCode::BAD_REQUEST
    );
}

struct TwoMembers;

impl ClusterView for TwoMembers {
    fn report(&self) -> BoxFuture<'_, ClusterReport> {
        Box::pin(async {
            let mut status = MemberStatus::default();
            status.id = "8e9e05c52164694d".into();
            status.leader = true;
            status.revision = 42;
            status.db_size = 20480;
            status.version = "3.5.1".into();
            ClusterReport::new(
                "etcd",
                vec![
                    Member::new("http://127.0.0.1:2379", Ok(status)),
                    Member::new("http://127.0.0.1:2380", Err("connection refused".into())),
                ],
            )
        })
    }
}

#[tokio::test]
async fn the_cluster_page_shows_members_and_this_console_health() {
    let h = Harness::with(ConsoleOptions::new().cluster(Arc::new(TwoMembers)));
    let page = h.get("/cluster").await;
    assert_eq!(page.status, StatusCode::OK);
    for shown in [
        "etcd",
        "http://127.0.0.1:2379",
        "8e9e05c52164694d",
        "3.5.1",
        "connection refused",
        "20 KiB",
    ] {
        assert!(page.body.contains(shown), "{shown}: {}", page.body);
    }
    assert!(
        page.body.contains("id=\"console-health\">ready"),
        "{}",
        page.body
    );
    let bare = Harness::new();
    let page = bare.get("/cluster").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(&format!("id=\"revision\">{}", bare.revision().await)),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn a_store_that_does_not_answer_gives_a_page_that_says_so() {
    let h = Harness::new();
    h.set("app/db", "1").await;
    h.store.partition();
    let reply = h.get("/config/key?k=app/db").await;
    assert!(reply.status.is_server_error(), "{}", reply.status);
    assert!(reply.body.contains("id=\"failure\""));
    let services = h.get("/services").await;
    assert_eq!(
        services.status,
        StatusCode::OK,
        "the page renders; its part says the store is down"
    );
    assert!(
        services.body.contains("The store did not answer"),
        "{}",
        services.body
    );
    h.store.heal();
    assert_eq!(h.get("/config/key?k=app/db").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_gray_release_is_shown_and_an_encrypted_value_is_not_edited() {
    let h = Harness::new();
    let config = h.coordinator.config();
    config.set("prod/shop/limit", &100).await.unwrap();
    let zone = coordkit::config::Labels::from([("zone".to_string(), "eu-1".to_string())]);
    let v = config
        .set_gray("prod/shop/limit", &200, zone)
        .await
        .unwrap();
    let page = h.get("/config/key?k=prod/shop/limit").await;
    assert!(page.body.contains("id=\"gray\""), "{}", page.body);
    assert!(
        page.body.contains("<strong>zone=eu-1</strong>")
            && page.body.contains(&format!("version {v}"))
    );
    let ring = coordkit::config::Keyring::new("k1", [7; 32]).unwrap();
    let sealed = config.with_encryption_for("secrets/", ring).unwrap();
    sealed.set("secrets/db", "hunter2").await.unwrap();
    let page = h.get("/config/key?k=secrets/db").await;
    assert!(
        page.body.contains("id=\"sealed\"") && page.body.contains("with key k1"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("hunter2") && !page.body.contains("id=\"edit\""));
    let edit = h.get("/config/edit?k=secrets/db").await;
    assert_eq!(edit.status, StatusCode::BAD_REQUEST, "{}", edit.body);
    let (_, version) = config.get_bytes_with_version("secrets/db").await.unwrap();
    let version = version.to_string();
    let clear = [
        ("key", "secrets/db"),
        ("version", version.as_str()),
        ("value", "\"plain\""),
    ];
    for path in ["/config/review", "/config/publish"] {
        assert_eq!(
            h.post(path, &clear).await.status,
            StatusCode::BAD_REQUEST,
            "{path}"
        );
    }
    assert_eq!(
        sealed.get::<String>("secrets/db").await.unwrap(),
        "hunter2",
        "still sealed"
    );
}
