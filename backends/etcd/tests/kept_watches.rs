//! A waiter queued again behind the same key waits on the watch its last wait
//! left, on etcd too: counted from etcd's own metrics (the messages its watch
//! service received: a create, a progress request, a cancel), two contenders
//! handing a lock or a one-permit semaphore back and forth ten times open no
//! watch per handoff. On a private etcd, so no other test's watches count.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::process::{etcd_binary_available, EtcdProcess};
use coordkit::{Coordinator, LockGuard, RangeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TTL: Duration = Duration::from_secs(10);
/// Handoffs counted, after two that fill the coordinators' kept watches.
const HANDOFFS: usize = 10;

/// The messages etcd's watch service has received on all its streams.
async fn watch_messages(port: u16) -> u64 {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to etcd's /metrics");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("ask for /metrics");
    let mut body = String::new();
    conn.read_to_string(&mut body).await.expect("read /metrics");
    let counts: Vec<u64> = body
        .lines()
        .filter(|l| {
            l.starts_with("grpc_server_msg_received_total{")
                && l.contains("grpc_method=\"Watch\"")
                && l.contains("grpc_service=\"etcdserverpb.Watch\"")
        })
        .map(|l| {
            let n = l.rsplit(' ').next().expect("a value");
            n.parse::<f64>().expect("a number") as u64
        })
        .collect();
    assert!(
        !counts.is_empty(),
        "etcd's /metrics has no grpc_server_msg_received_total for Watch"
    );
    counts.iter().sum()
}

async fn claim(c: Coordinator, name: &str, permits: Option<u32>) -> LockGuard {
    match permits {
        None => c.lock().acquire(name, TTL).await.expect("acquire"),
        Some(p) => c.semaphore().acquire(name, p, TTL).await.expect("acquire"),
    }
}

/// Wait until `prefix` holds two keys: the holder's and the waiter's.
async fn wait_for_waiter(c: &Coordinator, prefix: &str) {
    for _ in 0..500 {
        let keys = c
            .backend()
            .range(RangeRequest::prefix(prefix).count_only())
            .await
            .expect("count");
        if keys.count == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("{prefix} never had a holder and a waiter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcd (./scripts/test.sh runs it)"]
async fn handoffs_behind_the_same_key_open_no_watch() {
    assert!(etcd_binary_available());
    let etcd = EtcdProcess::start();
    let port = etcd.client_port;
    let a = Coordinator::new(Arc::new(EtcdProcess::connect_to(port).await));
    let b = Coordinator::new(Arc::new(EtcdProcess::connect_to(port).await));
    for (permits, prefix) in [
        (None, "coord/lock/kept/"),
        (Some(1), "coord/semaphore/kept/"),
    ] {
        let (mut holder, mut other) = (a.clone(), b.clone());
        let mut held = claim(holder.clone(), "kept", permits).await;
        let mut before = None;
        for round in 0..2 + HANDOFFS {
            if round == 2 {
                before = Some(watch_messages(port).await);
            }
            let waiting = tokio::spawn(claim(other.clone(), "kept", permits));
            wait_for_waiter(&holder, prefix).await;
            held.unlock().await.expect("unlock");
            held = waiting.await.expect("waiter");
            std::mem::swap(&mut holder, &mut other);
        }
        let received = watch_messages(port).await - before.expect("counted from round 2");
        held.unlock().await.expect("unlock");
        eprintln!("{permits:?}: {received} watch messages in {HANDOFFS} handoffs");
        // Without kept watches each handoff costs etcd three: the waiter's
        // create, its progress request and, after the wait, its cancel.
        assert!(
            received <= 3,
            "{permits:?}: {HANDOFFS} handoffs sent etcd's watch service {received} messages"
        );
    }
    a.close().await.expect("close");
    b.close().await.expect("close");
}
