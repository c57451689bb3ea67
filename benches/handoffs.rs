//! Contended handoffs against the same operation with one contender, measured in
//! alternating phases of one run after a warm-up: alone, all, alone, all, …, alone
//! (five phases alone, four with all).
//!
//! The host is shared by etcd and every contender, and its speed drifts by 15–20%
//! over seconds. Measured once at the start of a run, the uncontended rate of a
//! slow spell (or a fast one) would move every share computed from it; measured
//! around each contended phase, a spell moves both figures of a row alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coordkit::Coordinator;

use crate::measure::{CpuMeter, Samples};

/// One row's figures: the contended rate and the rate of its first contender
/// alone, each with its CPU per op.
pub struct Handoffs {
    /// Operations per second with every contender running.
    pub contended: Samples,
    /// Operations per second of the first contender running alone, in the phases
    /// before, between and after the contended ones.
    pub alone: Samples,
    /// CPU per op in the contended phases.
    pub cpu: String,
    /// CPU per op in the phases alone.
    pub alone_cpu: String,
}

impl Handoffs {
    /// The contended rate as a share of the rate alone.
    pub fn share(&self) -> f64 {
        self.contended.per_second() / self.alone.per_second().max(f64::MIN_POSITIVE)
    }
}

/// Run `op` in a loop on every coordinator (contended) and on the first alone:
/// a warm-up of 1/10 of `window` with all (not counted: sessions, connections
/// and the store's first writes of the queue), then five phases of 1/10
/// (alone) alternating with four of 1/4 (contended): 1.6 `window` in all.
/// Each phase ends when its time is up and every running op has finished.
pub async fn measure<F, Fut>(coordinators: &[Coordinator], window: Duration, op: F) -> Handoffs
where
    F: Fn(Coordinator) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut contended = (0, Duration::ZERO, CpuMeter::paused());
    let mut alone = (0, Duration::ZERO, CpuMeter::paused());
    run_phase(coordinators, window / 10, op.clone()).await;
    for phase in 0..9 {
        let (who, length, total) = if phase % 2 == 0 {
            (&coordinators[..1], window / 10, &mut alone)
        } else {
            (coordinators, window / 4, &mut contended)
        };
        total.2.resume();
        let (ops, took) = run_phase(who, length, op.clone()).await;
        total.2.pause();
        total.0 += ops;
        total.1 += took;
    }
    Handoffs {
        cpu: contended.2.per_op(contended.0),
        alone_cpu: alone.2.per_op(alone.0),
        contended: Samples::rate(contended.0, contended.1),
        alone: Samples::rate(alone.0, alone.1),
    }
}

/// `op` in a loop on each of `coordinators` for `length`: the ops finished and the
/// time they took.
async fn run_phase<F, Fut>(coordinators: &[Coordinator], length: Duration, op: F) -> (u64, Duration)
where
    F: Fn(Coordinator) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = coordinators
        .iter()
        .map(|c| {
            let (c, count, op) = (c.clone(), count.clone(), op.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    op(c.clone()).await;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("contender");
    }
    (count.load(Ordering::Relaxed), start.elapsed())
}
