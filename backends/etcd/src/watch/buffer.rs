//! The buffer between the watch hub and one watch's consumer: bounded, and
//! allocated as it fills, so an idle watch holds no preallocated slots (a tokio
//! channel allocates its first block of 32 slots, ~1.8 KiB, per watch).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use coordkit::{Result, WatchResponse};

type Item = Result<WatchResponse>;

struct Queue {
    items: VecDeque<Item>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
}

struct Shared {
    queue: Mutex<Queue>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why an item was not buffered; it comes back.
pub(crate) enum Refused {
    /// `capacity` items wait already.
    Full,
    /// The consumer is gone.
    Closed,
}

/// The hub's end.
pub(crate) struct Sender {
    shared: Arc<Shared>,
    capacity: usize,
}

/// The consumer's end.
pub(crate) struct Receiver {
    shared: Arc<Shared>,
}

/// A buffer for at most `capacity` items.
pub(crate) fn buffer(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            waker: None,
            sender_gone: false,
            receiver_gone: false,
        }),
    });
    (
        Sender {
            shared: shared.clone(),
            capacity,
        },
        Receiver { shared },
    )
}

impl Sender {
    /// Buffer `item` unless the buffer is full or the consumer gone.
    pub(crate) fn try_send(&self, item: Item) -> std::result::Result<(), Refused> {
        let mut q = self.shared.lock();
        if q.receiver_gone {
            return Err(Refused::Closed);
        }
        if q.items.len() >= self.capacity {
            return Err(Refused::Full);
        }
        q.items.push_back(item);
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Whether the consumer has read everything buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut q = self.shared.lock();
        q.sender_gone = true;
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Receiver {
    /// The next item; `None` once the hub dropped its end and all is read.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let mut q = self.shared.lock();
        if let Some(item) = q.items.pop_front() {
            if q.items.is_empty() && q.items.capacity() > 8 {
                // A burst is over: give its memory back.
                q.items.shrink_to(8);
            }
            return Poll::Ready(Some(item));
        }
        if q.sender_gone {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut q = self.shared.lock();
        q.receiver_gone = true;
        q.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    fn item(revision: i64) -> Item {
        Ok(WatchResponse {
            revision,
            events: Vec::new(),
        })
    }

    #[test]
    fn bounded_in_order_and_closed_from_either_end() {
        let (tx, mut rx) = buffer(2);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(tx.try_send(item(1)).is_ok());
        assert!(tx.try_send(item(2)).is_ok());
        assert!(matches!(tx.try_send(item(3)), Err(Refused::Full)));
        assert!(!tx.is_empty());
        for want in [1, 2] {
            match rx.poll_recv(&mut cx) {
                Poll::Ready(Some(Ok(r))) => assert_eq!(r.revision, want),
                _ => panic!("item {want} not delivered"),
            }
        }
        assert!(tx.is_empty());
        drop(tx);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
        let (tx, rx) = buffer(2);
        drop(rx);
        assert!(matches!(tx.try_send(item(1)), Err(Refused::Closed)));
    }

    fn noop_waker_ref() -> &'static Waker {
        Box::leak(Box::new(noop_waker()))
    }
}
