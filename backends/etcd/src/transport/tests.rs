//! The connection against an HTTP/2 server in the test: calls and their
//! answers, a new connection after the server closed one, a member that stops
//! answering pings, a member that cannot be reached.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Body as _;
use tokio::net::TcpListener;
use tonic::body::Body;
use tower::Service;

use super::{Direct, Settings};

/// What the server does with a connection.
#[derive(Clone, Copy, PartialEq)]
enum Serve {
    /// Answer every call, gRPC-style (data, then trailers with the status).
    Answer,
    /// Answer one call, then close the connection.
    AnswerOnceThenClose,
    /// Take one call, then stop reading the connection (no answer, no pongs).
    GoSilent,
}

struct Server {
    url: String,
    connections: Arc<AtomicUsize>,
}

async fn start_server(serve: Serve) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(connection(tcp, serve));
        }
    });
    Server { url, connections }
}

async fn connection(tcp: tokio::net::TcpStream, serve: Serve) {
    let mut h2 = h2::server::handshake(tcp).await.unwrap();
    while let Some(Ok((request, mut respond))) = h2.accept().await {
        let mut body = request.into_body();
        let mut got = Vec::new();
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        if serve == Serve::GoSilent {
            // Keep the connection, read nothing more: pings go unanswered.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        let head = Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let mut stream = respond.send_response(head, false).unwrap();
        stream.send_data(Bytes::from(got), false).unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        stream.send_trailers(trailers).unwrap();
        if serve == Serve::AnswerOnceThenClose {
            h2.graceful_shutdown();
            while h2.accept().await.is_some() {}
            return;
        }
    }
}

fn settings() -> Settings {
    Settings {
        connect_timeout: Duration::from_secs(5),
        keep_alive_interval: Duration::from_millis(100),
        keep_alive_timeout: Duration::from_millis(100),
    }
}

/// One call with `message` as its body: the answer's data and trailers.
async fn call(direct: &mut Direct, message: &'static str) -> Result<(Vec<u8>, HeaderMap), String> {
    let request = Request::post("/test.Echo/Call")
        .header("content-type", "application/grpc")
        .body(Body::new(message.to_string()))
        .unwrap();
    let response = direct.call(request).await.map_err(|e| e.to_string())?;
    let mut body = response.into_body();
    let (mut data, mut trailers) = (Vec::new(), HeaderMap::new());
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| e.to_string())?;
        match frame.into_data() {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(frame) => trailers = frame.into_trailers().unwrap_or_default(),
        }
    }
    Ok((data, trailers))
}

#[tokio::test]
async fn calls_share_a_connection_and_a_closed_one_is_replaced() {
    let server = start_server(Serve::Answer).await;
    let mut direct = Direct::for_url(&server.url, settings()).unwrap();
    for message in ["one", "two", "three"] {
        let (data, trailers) = call(&mut direct, message).await.unwrap();
        assert_eq!(data, message.as_bytes());
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);

    let closing = start_server(Serve::AnswerOnceThenClose).await;
    let mut direct = Direct::for_url(&closing.url, settings()).unwrap();
    for message in ["before", "after"] {
        // The second call finds the connection closed and makes a new one.
        let mut answered = call(&mut direct, message).await;
        for _ in 0..50 {
            if answered.is_ok() {
                break;
            }
            // The close may land while the call is on its way: that call fails
            // (its fate is unknown to the caller); the next connects anew.
            tokio::time::sleep(Duration::from_millis(20)).await;
            answered = call(&mut direct, message).await;
        }
        assert_eq!(answered.unwrap().0, message.as_bytes());
    }
    assert_eq!(closing.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_member_that_stops_answering_pings_is_left() {
    let server = start_server(Serve::GoSilent).await;
    let mut direct = Direct::for_url(&server.url, settings()).unwrap();
    // The call is taken and never answered; the unanswered ping closes the
    // connection, which fails the call (a bound, not a measured time).
    let failed = tokio::time::timeout(Duration::from_secs(30), call(&mut direct, "hello"))
        .await
        .expect("an unanswered ping must end the call");
    let error = failed.unwrap_err();
    assert!(error.contains("h2 protocol error"), "{error}");
    // The next call connects anew.
    let _ = tokio::time::timeout(Duration::from_secs(30), call(&mut direct, "again")).await;
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unreachable_member_never_got_the_request() {
    // A port nobody listens on: bind, learn the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut direct = Direct::for_url(&format!("http://127.0.0.1:{port}"), settings()).unwrap();
    let request = Request::post("/test.Echo/Call")
        .body(Body::new("x".to_string()))
        .unwrap();
    let error = direct.call(request).await.unwrap_err();
    let status = tonic::Status::from_error(error);
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        crate::convert::never_sent(&etcd_client::Error::GRpcStatus(status)),
        "a failed connection must count as never sent"
    );
}

#[test]
fn only_plain_http_endpoints_are_served() {
    for url in ["http://127.0.0.1:2379", "http://etcd-0:2379/"] {
        assert!(Direct::for_url(url, settings()).is_some(), "{url}");
    }
    for url in [
        "https://127.0.0.1:2379",
        "127.0.0.1:2379",
        "http://etcd-0",
        "http://h:1/path",
    ] {
        assert!(Direct::for_url(url, settings()).is_none(), "{url}");
    }
}
