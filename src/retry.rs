//! Retries with exponential backoff, for operations that are safe to repeat.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

/// How often, and how patiently, an operation that failed with a retryable error
/// ([`Error::is_retryable`]: `Unavailable`, `Timeout`) is tried again.
///
/// The recipes apply it only where repeating cannot double-apply: reads, read-only
/// transactions, and writes guarded by a compare that makes a repeat a no-op (a
/// lock claim is created only if absent; an unlock deletes only its own create
/// revision). Other errors are returned at once.
///
/// Delays grow from `initial_delay` by `multiplier` up to `max_delay`, on tokio's
/// clock (so a paused test clock skips them). Each wait is shortened by a random
/// share of up to `jitter` (0.5 by default: somewhere between half and all of the
/// computed delay), so that many clients failing together do not retry in lockstep.
/// `deadline`, if set, bounds the whole call: no wait starts that would end past it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Tries in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// The wait before the second try.
    pub initial_delay: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
    /// Each wait is the previous one times this (at least 1.0).
    pub multiplier: f64,
    /// The largest share of each wait taken off at random, from 0.0 (none) to 1.0.
    pub jitter: f64,
    /// The longest time all tries together may take, waits included; `None`: bounded
    /// by `max_attempts` only.
    pub deadline: Option<Duration>,
}

impl Default for RetryPolicy {
    /// 5 attempts, 200 ms, doubling, at most 5 s apart.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.5,
            deadline: None,
        }
    }
}

impl RetryPolicy {
    /// One try, no retry.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// With `n` tries in all (the first included).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// With waits starting at `initial`, growing by `multiplier`, capped at `max`.
    pub fn with_backoff(mut self, initial: Duration, max: Duration, multiplier: f64) -> Self {
        (self.initial_delay, self.max_delay, self.multiplier) = (initial, max, multiplier);
        self
    }

    /// With up to this share (0.0 to 1.0) of each wait taken off at random.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// With all tries together bounded by `deadline`, waits included.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Check the settings: at least one attempt, a finite multiplier of at least 1,
    /// a jitter from 0 to 1, and `initial_delay <= max_delay`.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::invalid(
                "retry.max_attempts",
                "must be at least 1 (the first try)",
            ));
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(Error::invalid(
                "retry.multiplier",
                format!("must be a finite number >= 1.0, got {}", self.multiplier),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid(
                "retry.jitter",
                format!("must be from 0.0 to 1.0, got {}", self.jitter),
            ));
        }
        if self.initial_delay > self.max_delay {
            return Err(Error::invalid(
                "retry.initial_delay",
                format!(
                    "{:?} is longer than max_delay {:?}",
                    self.initial_delay, self.max_delay
                ),
            ));
        }
        Ok(())
    }

    /// The wait after failed try number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let delay = self.initial_delay.as_secs_f64() * factor;
        if !delay.is_finite() || delay >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(delay)
        }
    }

    /// [`RetryPolicy::delay`] less a random share of up to `jitter`.
    pub fn jittered_delay(&self, attempt: u32) -> Duration {
        jittered(self.delay(attempt), self.jitter)
    }

    /// Run `attempt` until it succeeds, fails with a non-retryable error, or the
    /// attempts are used up (then the last error is returned). `operation` names it
    /// in the logs. The closure is told which try this is (1-based), so a caller can
    /// tell "an earlier try may have applied" from "this is the first".
    pub async fn run<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempts = self.max_attempts.max(1);
        let deadline = self
            .deadline
            .and_then(|d| tokio::time::Instant::now().checked_add(d));
        let mut n = 1;
        loop {
            match attempt(n).await {
                Err(e) if e.is_retryable() && n < attempts => {
                    let delay = self.jittered_delay(n);
                    if deadline.is_some_and(|d| tokio::time::Instant::now() + delay > d) {
                        tracing::debug!(operation, attempt = n, error = %e, "retry deadline reached");
                        return Err(e);
                    }
                    tracing::debug!(operation, attempt = n, ?delay, error = %e, "retrying");
                    tokio::time::sleep(delay).await;
                    n += 1;
                }
                other => return other,
            }
        }
    }
}

impl RetryPolicy {
    /// The waits of a loop that goes on until it succeeds, at this policy's
    /// pace (see [`Backoff`]).
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: self.clone(),
            failures: 0,
            cap: None,
        }
    }

    /// One short pause before trying again after a failure that a loop does
    /// not count (a watch that broke, to be opened again): the policy's first
    /// delay, jittered.
    pub(crate) async fn pause(&self) {
        tokio::time::sleep(self.jittered_delay(1)).await;
    }
}

/// The one way to back off outside [`RetryPolicy::run`]: the waits of a loop
/// that tries until it succeeds or something else ends it (a follower, a
/// keeper, a cleanup, a keep-alive). Each failure in a row waits the policy's
/// next jittered delay (up to its `max_delay`, or a tighter cap); a success
/// starts over from the first.
///
/// Made by [`RetryPolicy::backoff`]; for loops outside coordkit that follow
/// the store the same way (the console's live pages do).
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    failures: u32,
    cap: Option<Duration>,
}

impl Backoff {
    /// The policy it follows.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// With no wait longer than `cap`.
    pub fn capped(mut self, cap: Duration) -> Self {
        self.cap = Some(cap);
        self
    }

    /// A failure: the wait before the next try.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = self.policy.jittered_delay(self.failures);
        self.cap.map_or(delay, |cap| delay.min(cap))
    }

    /// A failure: wait before the next try.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.failed()).await;
    }

    /// A success: the next failure waits the shortest time again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Whether the failures in a row used up the policy's attempts (for a
    /// bounded loop that cannot use [`RetryPolicy::run`]).
    pub fn exhausted(&self) -> bool {
        self.failures >= self.policy.max_attempts.max(1)
    }
}

/// `base` less a random share of up to `jitter` (0.0 to 1.0) of it.
pub(crate) fn jittered(base: Duration, jitter: f64) -> Duration {
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    base.mul_f64(1.0 - jitter * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn delays_grow_by_the_multiplier_up_to_the_cap() {
        let p = RetryPolicy::default();
        let delays: Vec<_> = (1..=7).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(p.delay(u32::MAX), p.max_delay);
    }

    #[test]
    fn a_backoff_grows_with_failures_in_a_row_and_starts_over_after_a_success() {
        let p = RetryPolicy::default().with_jitter(0.0);
        let mut b = p.backoff();
        let waits: Vec<_> = (0..7).map(|_| b.failed().as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert!(b.exhausted());
        b.succeeded();
        assert!(!b.exhausted());
        assert_eq!(b.failed().as_millis(), 200);
        let mut capped = p.backoff().capped(Duration::from_millis(300));
        let waits: Vec<_> = (0..3).map(|_| capped.failed().as_millis()).collect();
        assert_eq!(waits, [200, 300, 300]);
    }

    #[test]
    fn bad_settings_are_invalid() {
        for (p, arg) in [
            (
                RetryPolicy {
                    max_attempts: 0,
                    ..RetryPolicy::default()
                },
                "retry.max_attempts",
            ),
            (
                RetryPolicy {
                    multiplier: 0.5,
                    ..RetryPolicy::default()
                },
                "retry.multiplier",
            ),
            (
                RetryPolicy {
                    multiplier: f64::NAN,
                    ..RetryPolicy::default()
                },
                "retry.multiplier",
            ),
            (
                RetryPolicy {
                    jitter: 1.5,
                    ..RetryPolicy::default()
                },
                "retry.jitter",
            ),
            (
                RetryPolicy {
                    initial_delay: Duration::from_secs(10),
                    ..RetryPolicy::default()
                },
                "retry.initial_delay",
            ),
        ] {
            match p.validate() {
                Err(Error::InvalidArgument { argument, .. }) => assert_eq!(argument, arg),
                other => panic!("{p:?}: expected InvalidArgument({arg}), got {other:?}"),
            }
        }
        RetryPolicy::default().validate().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let out = RetryPolicy::default()
            .run("test", |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err(Error::unavailable("down"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(out.unwrap(), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Waited 200 ms + 400 ms of (paused) tokio time, less up to half by jitter.
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited <= Duration::from_millis(600),
            "{waited:?}"
        );
    }

    #[test]
    fn jitter_spreads_delays_within_the_share() {
        let p = RetryPolicy::default();
        let delays: Vec<_> = (0..200).map(|_| p.jittered_delay(1)).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_millis(200)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "delays do not spread: {distinct:?}");
        let none = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(none.jittered_delay(2), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_all_tries() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            max_attempts: 100,
            jitter: 0.0,
            deadline: Some(Duration::from_secs(1)),
            ..RetryPolicy::default()
        };
        let start = tokio::time::Instant::now();
        let out: Result<()> = policy
            .run("test", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::unavailable("down")) }
            })
            .await;
        assert!(out.unwrap_err().is_retryable());
        // 200 + 400 ms waited; the next 800 ms wait would end past the deadline.
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(start.elapsed() <= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_and_the_last_error_returned() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = RetryPolicy::default()
            .run("test", |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(Error::unavailable(format!("down {n}"))) }
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert!(matches!(out, Err(Error::Unavailable { reason, .. }) if reason == "down 5"));
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = RetryPolicy::default()
            .run("test", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::LockNotHeld { name: "x".into() }) }
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(out, Err(Error::LockNotHeld { .. })));
    }
}
