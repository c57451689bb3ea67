//! Fencing, shown: a resource outside the lock's store refuses the write of a
//! holder that was paused past its TTL, while the next holder's writes go through.
//!
//! The resource is a small storage service on a TCP port of its own (think of a
//! database table with a `token` column written only `WHERE token <= $1`): it
//! keeps the highest fencing token it has seen and refuses a write that carries
//! a lower one. Node A takes the lock and writes; then A is paused (a GC pause, a
//! VM migration) and its lease ends meanwhile — here it is revoked, as its TTL
//! running out would end it. Node B takes the lock with a larger token and
//! writes. A wakes up, unaware, and writes with its old token: refused.
//!
//! Run with `cargo run --example fencing` (in memory), or on etcd with
//! `COORD_ETCD_ENDPOINTS` set and `-p coordkit-examples --features etcd`. Exits
//! with an error if the stale write goes through.

use std::time::Duration;

use coordkit::Revision;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const TTL: Duration = Duration::from_secs(5);

/// The storage service: one line `WRITE <token> <data>` per connection, answered
/// `OK` or `REJECTED ...`. It knows nothing of the lock, only of tokens.
async fn storage_service(listener: TcpListener) {
    let mut highest: Revision = 0;
    let mut data = Vec::<String>::new();
    while let Ok((conn, _)) = listener.accept().await {
        let (read, mut write) = conn.into_split();
        let Ok(Some(line)) = BufReader::new(read).lines().next_line().await else {
            continue;
        };
        let answer = match line.split_once(' ').and_then(|(verb, rest)| {
            let (token, value) = rest.split_once(' ')?;
            Some((verb, token.parse::<Revision>().ok()?, value))
        }) {
            Some(("WRITE", token, value)) if token >= highest => {
                highest = token;
                data.push(value.to_string());
                format!("OK (rows: {})", data.join(", "))
            }
            Some(("WRITE", token, _)) => {
                format!("REJECTED token {token} is older than {highest}")
            }
            _ => "ERROR expected WRITE <token> <data>".to_string(),
        };
        let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
    }
}

/// What a client of the storage service does: send its token with the write.
async fn write(addr: std::net::SocketAddr, token: Revision, value: &str) -> String {
    let mut conn = TcpStream::connect(addr).await.expect("the storage service");
    conn.write_all(format!("WRITE {token} {value}\n").as_bytes())
        .await
        .expect("send");
    let mut answer = String::new();
    BufReader::new(conn)
        .read_line(&mut answer)
        .await
        .expect("answer");
    answer.trim_end().to_string()
}

#[tokio::main]
async fn main() -> coordkit::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(storage_service(listener));

    let store = coordkit_examples::Store::from_env();
    let (node_a, node_b) = (store.coordinator().await?, store.coordinator().await?);

    let a = node_a.lock().acquire("payroll-export", TTL).await?;
    let a_token = a.fencing_token();
    println!("node a holds the lock, token {a_token}");
    println!(
        "node a writes:        {}",
        write(addr, a_token, "a-1").await
    );

    // Node A stops here (a pause) and its lease ends meanwhile.
    let lease = a.session().lease();
    node_b.backend().lease_revoke(lease).await?;
    println!("node a is paused; its lease {lease} ends");

    let b = node_b.lock().acquire("payroll-export", TTL).await?;
    let b_token = b.fencing_token();
    println!("node b holds the lock, token {b_token}");
    println!(
        "node b writes:        {}",
        write(addr, b_token, "b-1").await
    );

    // Node A wakes up and, not having looked at its guard, writes.
    let stale = write(addr, a_token, "a-2").await;
    println!("node a (stale) writes: {stale}");
    println!(
        "node b writes again:  {}",
        write(addr, b_token, "b-2").await
    );

    b.unlock().await?;
    drop(a);
    node_a.close().await?;
    node_b.close().await?;
    if !stale.starts_with("REJECTED") || b_token <= a_token {
        return Err(coordkit::Error::invalid(
            "fencing",
            format!("the stale holder's write went through: {stale}"),
        ));
    }
    println!("the storage service refused the paused holder's write");
    Ok(())
}
