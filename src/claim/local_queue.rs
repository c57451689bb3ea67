//! In-process queues per lock or election name.
//!
//! Tasks of one coordinator share a session, hence a lease, hence the same claim key
//! for a name: the store cannot tell them apart. So they queue here first, FIFO
//! (tokio's mutex is fair), and only the head of the local queue claims in the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

type Queue = Arc<tokio::sync::Mutex<()>>;

/// One FIFO queue per name; a name's entry is dropped once nobody uses it.
#[derive(Default)]
pub(crate) struct LocalQueues {
    queues: Arc<Mutex<HashMap<String, Queue>>>,
}

/// The head of a local queue. Dropping it lets the next local task go.
pub(crate) struct LocalTurn {
    guard: Option<OwnedMutexGuard<()>>,
    queues: Arc<Mutex<HashMap<String, Queue>>>,
    name: String,
}

impl LocalQueues {
    fn queue(&self, name: &str) -> Queue {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.entry(name.to_string()).or_default().clone()
    }

    /// Wait for this task's turn at `name`.
    pub(crate) async fn wait(&self, name: &str) -> LocalTurn {
        let guard = self.queue(name).lock_owned().await;
        self.turn(name, guard)
    }

    /// This task's turn at `name` if nobody else of this process has it.
    pub(crate) fn try_now(&self, name: &str) -> Option<LocalTurn> {
        // On failure the clone inside the error is dropped before the map is tidied.
        match self.queue(name).try_lock_owned() {
            Ok(guard) => Some(self.turn(name, guard)),
            Err(_) => {
                self.forget_if_unused(name);
                None
            }
        }
    }

    fn turn(&self, name: &str, guard: OwnedMutexGuard<()>) -> LocalTurn {
        LocalTurn {
            guard: Some(guard),
            queues: self.queues.clone(),
            name: name.to_string(),
        }
    }

    fn forget_if_unused(&self, name: &str) {
        forget_if_unused(&self.queues, name);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queues.lock().unwrap().len()
    }
}

fn forget_if_unused(queues: &Mutex<HashMap<String, Queue>>, name: &str) {
    let mut queues = queues.lock().unwrap_or_else(|e| e.into_inner());
    // Only the map holds it: nobody holds or awaits this queue.
    if queues.get(name).is_some_and(|q| Arc::strong_count(q) == 1) {
        queues.remove(name);
    }
}

impl Drop for LocalTurn {
    fn drop(&mut self) {
        drop(self.guard.take());
        forget_if_unused(&self.queues, &self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_are_fifo_and_entries_are_forgotten() {
        let queues = Arc::new(LocalQueues::default());
        let first = queues.wait("a").await;
        assert!(queues.try_now("a").is_none());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (queues, order) = (queues.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = queues.wait("a").await;
                order.lock().unwrap().push(i);
            }));
            // Let task i enqueue before task i + 1.
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert_eq!(queues.len(), 0, "an unused queue is forgotten");
        let other = queues.try_now("b").expect("free");
        assert_eq!(queues.len(), 1);
        drop(other);
        assert_eq!(queues.len(), 0);
    }
}
