//! Retrying with exponential back-off: the one policy behind every wait on a service that is away
//! (a catalog, a broker, a schema registry) or that lost a commit's answer.
//!
//! ```
//! use std::time::Duration;
//! use sessionize::retry::Backoff;
//! let policy = Backoff::new(Duration::from_millis(1), Duration::from_millis(4)).attempts(4);
//! let mut calls = 0;
//! let result: Result<u32, &str> = policy.retry(
//!     || { calls += 1; if calls < 3 { Err("away") } else { Ok(calls) } },
//!     |_error, _delay| {},
//! );
//! assert_eq!(result, Ok(3));
//! ```

use std::future::Future;
use std::time::{Duration, Instant};

/// How long to wait between attempts, and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    limit: Limit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// Give up once this long has passed since the first attempt.
    Patience(Duration),
    /// Give up after this many attempts in all.
    Attempts(u32),
}

impl Backoff {
    /// Waits of `first`, doubling up to `max`, for a minute.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            limit: Limit::Patience(Duration::from_secs(60)),
        }
    }

    /// Gives up once `patience` has passed since the first attempt.
    pub const fn patience(mut self, patience: Duration) -> Self {
        self.limit = Limit::Patience(patience);
        self
    }

    /// Gives up after `attempts` attempts in all.
    pub const fn attempts(mut self, attempts: u32) -> Self {
        self.limit = Limit::Attempts(attempts);
        self
    }

    /// The waits before each retry, starting now; `None` once the policy gives up.
    pub fn delays(&self) -> Delays {
        Delays {
            policy: *self,
            next: self.first,
            started: Instant::now(),
            attempts: 1,
        }
    }

    /// Calls `attempt` until it succeeds or the policy gives up (then its last error comes back);
    /// `on_retry` hears of each failure that is retried, and of the wait before the retry.
    pub fn retry<T, E>(
        &self,
        mut attempt: impl FnMut() -> Result<T, E>,
        mut on_retry: impl FnMut(&E, Duration),
    ) -> Result<T, E> {
        let mut delays = self.delays();
        loop {
            let error = match attempt() {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let Some(delay) = delays.next() else {
                return Err(error);
            };
            on_retry(&error, delay);
            std::thread::sleep(delay);
        }
    }

    /// [`Backoff::retry`] for an async `attempt`, waiting on tokio's timer.
    pub async fn retry_async<T, E, F>(
        &self,
        mut attempt: impl FnMut() -> F,
        mut on_retry: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let mut delays = self.delays();
        loop {
            let error = match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let Some(delay) = delays.next() else {
                return Err(error);
            };
            on_retry(&error, delay);
            tokio::time::sleep(delay).await;
        }
    }
}

/// The waits of one [`Backoff`], as an iterator: for loops whose retries need more than a closure
/// (a commit that looks at the table between attempts).
#[derive(Debug)]
pub struct Delays {
    policy: Backoff,
    next: Duration,
    started: Instant,
    attempts: u32,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        match self.policy.limit {
            Limit::Attempts(limit) if self.attempts >= limit => return None,
            Limit::Patience(patience) if self.started.elapsed() >= patience => return None,
            _ => {}
        }
        self.attempts += 1;
        let delay = self.next;
        self.next = (self.next * 2).min(self.policy.max);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_stop_after_the_attempts() {
        let policy = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = policy.attempts(5).delays().collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(delays, vec![ms(100), ms(200), ms(350), ms(350)]);
    }

    #[test]
    fn patience_ends_the_retries() {
        let policy = Backoff::new(Duration::ZERO, Duration::ZERO).patience(Duration::ZERO);
        let mut calls = 0;
        let result: Result<(), u32> = policy.retry(
            || {
                calls += 1;
                Err(calls)
            },
            |_, _| {},
        );
        assert_eq!(result, Err(1));
    }

    #[test]
    fn each_retried_failure_is_reported_with_its_wait() {
        let policy = Backoff::new(Duration::ZERO, Duration::ZERO).attempts(3);
        let mut heard = Vec::new();
        let result: Result<(), &str> = policy.retry(|| Err("down"), |e, _| heard.push(*e));
        assert_eq!((result, heard.len()), (Err("down"), 2));
    }
}
