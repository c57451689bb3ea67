//! The web console on a store with a service, a config key and a lock in it:
//! prints the address to open, checks its own Services page once over HTTP,
//! and exits — or, with `--serve`, serves until Ctrl-C.
//!
//! Run with `cargo run --example console -- --serve` and open the printed
//! address; on etcd or Postgres with `COORD_ETCD_ENDPOINTS` or
//! `COORD_POSTGRES_URL` set (operators use `coordctl console` instead).

use std::time::Duration;

use coordkit::ServiceInfo;
use coordkit_console::{Console, ConsoleOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = coordkit_examples::Store::from_env();
    let coordinator = store.coordinator().await?;
    let ttl = Duration::from_secs(10);
    let _registration = coordinator
        .registry()
        .register(ServiceInfo::new("web-1", "web", "10.0.0.7", 8080), ttl)
        .await?;
    coordinator
        .config()
        .set_bytes("web/limits", br#"{"rps": 100}"#.to_vec())
        .await?;
    let _lock = coordinator.lock().acquire("nightly-report", ttl).await?;

    let console = Console::new(coordinator.clone(), ConsoleOptions::new())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    println!("console: http://{local}{}", console.login_path());
    let serve = std::env::args().any(|a| a == "--serve");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(console.clone().serve(listener, async move {
        if serve {
            let _ = tokio::signal::ctrl_c().await;
        } else {
            let _ = stopped.await;
        }
    }));
    if !serve {
        // What a browser does: log in (the cookie is the token), then ask.
        let cookie = format!("coordkit_console={}", console.token());
        let page = get(local, "/services", &cookie).await?;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("data-service=\"web\""), "{page}");
        println!("the Services page lists web with 1 instance");
        let refused = get(local, "/services", "").await?;
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
        println!("without the cookie: 401");
        let _ = stop.send(());
    }
    server.await??;
    coordinator.close().await?;
    Ok(())
}

/// One GET over a fresh connection; the whole answer.
async fn get(at: std::net::SocketAddr, path: &str, cookie: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(at).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {at}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer)
}
