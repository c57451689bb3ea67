//! The public futures are `Send`, so they can be spawned on a multi-threaded
//! runtime and held across `.await` in a spawned task. Each future goes through
//! `send`, which does not compile for a future that is not `Send`; the test then
//! runs them all once on the memory backend.

use std::sync::Arc;
use std::time::Duration;

use coordkit::{ConfigChange, ConfigManager, Coordinator, QueueName, ServiceInfo};
use coordkit_memory::MemoryBackend;
use futures::StreamExt;

const TTL: Duration = Duration::from_secs(10);

fn send<F: std::future::Future + Send>(future: F) -> F {
    future
}

#[tokio::test(start_paused = true)]
async fn the_public_futures_are_send() -> coordkit::Result<()> {
    let c = Coordinator::new(Arc::new(MemoryBackend::new()));

    let guard = send(c.lock().acquire("l", TTL)).await?;
    send(guard.renew()).await?;
    send(guard.ttl()).await?;
    send(guard.is_held()).await?;
    drop(send(guard.lost()));
    send(c.lock().holders_and_waiters(QueueName::etcd_prefix("/l"))).await?;
    send(guard.unlock()).await?;
    send(c.lock().try_acquire("l", TTL)).await?.unlock().await?;
    send(c.semaphore().acquire("s", 2, TTL))
        .await?
        .unlock()
        .await?;
    send(c.rw_lock().read("rw", TTL)).await?.unlock().await?;
    send(c.rw_lock().write("rw", TTL)).await?.unlock().await?;

    let leadership = send(c.election().campaign("e", "a")).await?;
    send(leadership.proclaim("b")).await?;
    send(c.election().leader("e")).await?;
    send(c.election().observe("e")?.next()).await;
    send(leadership.resign()).await?;
    send(c.election().try_campaign("e", "a"))
        .await?
        .resign()
        .await?;

    send(c.counter().add("n", 1)).await?;
    send(c.barrier().set("b")).await?;
    send(c.barrier().remove("b")).await?;
    send(c.barrier().wait("b")).await?;
    send(c.barrier().enter("d", 1, TTL)).await?.leave().await?;

    let registry = c.registry();
    let registration =
        send(registry.register(ServiceInfo::new("i", "svc", "10.0.0.1", 1), TTL)).await?;
    send(registration.update(|i| i.weight = 2)).await?;
    send(registry.discover("svc")).await?;
    let _ = send(registry.cache("svc")).await?;
    let _ = send(registry.watch("svc")).await?;
    send(registry.etcd_naming("target")?.discover()).await?;
    send(registration.deregister()).await?;

    let config = c.config();
    let version = send(config.set("k", &1u32)).await?;
    send(config.get::<u32>("k")).await?;
    send(config.compare_and_set("k", &2u32, version)).await?;
    send(config.history::<u32>("k", 2)).await?;
    let _ = send(config.watch::<u32>("k")).await?;
    let _ = send(config.watch_prefix::<u32>("")).await?;
    send(config.update_many(vec![ConfigChange::delete("k")])).await?;
    let manager =
        send(ConfigManager::builder(&config, "prod", "app", "limits", 0u32).start()).await?;
    drop(manager);

    send(c.session(TTL)).await?;
    send(c.health()).await;
    send(c.close()).await
}
