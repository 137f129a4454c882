//! Login throttling as OWASP recommends it, so password guessing is slow however it is spread,
//! yet a guesser cannot lock an account's owner out:
//!
//! - per (account, client address): exponential backoff on consecutive failures, reset by a
//!   successful login. An attacker at one address slows down only themselves; the owner at
//!   another address is not affected.
//! - per client address: a rate limit over all accounts (`governor`'s GCRA).
//! - per account: a much higher global ceiling over all addresses, so a distributed attacker is
//!   still slowed. One address cannot reach it, since its backoff lets too few attempts through.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Above this many tracked keys, forget the ones whose quota has fully recovered.
const RETAIN_THRESHOLD: usize = 10_000;

/// The limits of `POST /auth/tokens/obtain/`.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Attempts per client address per minute, over all accounts.
    pub per_ip_per_minute: NonZeroU32,
    /// Attempts per account per minute, over all addresses (the global ceiling).
    pub per_account_per_minute: NonZeroU32,
    /// Consecutive failures of one (account, address) pair that cost no waiting.
    pub free_failures: u32,
    /// The first wait after the free failures; it doubles with every further failure.
    pub backoff_base: Duration,
    /// The longest wait; also how long a pair must stay quiet after its wait to be forgiven.
    pub backoff_max: Duration,
}

/// Consecutive failures of one (account, address) pair.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// The limiters of `POST /auth/tokens/obtain/`.
#[derive(Debug)]
pub struct LoginThrottle {
    limits: LoginLimits,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
    // Held only for a map operation, never across an await.
    failures: Mutex<HashMap<(String, IpAddr), Failures>>,
}

impl LoginThrottle {
    /// Limiters with the given limits; the rates allow their number as a burst, then evenly.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            per_ip: RateLimiter::keyed(Quota::per_minute(limits.per_ip_per_minute)),
            per_account: RateLimiter::keyed(Quota::per_minute(limits.per_account_per_minute)),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt from `ip`; 429 with `Retry-After` when over quota.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.per_ip.len() > RETAIN_THRESHOLD {
            self.per_ip.retain_recent();
        }
        self.per_ip
            .check_key(&ip)
            .map_err(|not_until| too_many(&not_until))
    }

    /// Admits an attempt on the account `email_key` from `ip`, or 429 with `Retry-After`: while
    /// the pair waits out its backoff, or when the account's global ceiling is reached.
    ///
    /// An admitted attempt counts as a failure of the pair at once (so parallel guesses cannot
    /// all pass before the first one fails); [`LoginThrottle::succeeded`] clears it. Refused
    /// attempts count nowhere, so a throttled address cannot use up the account's ceiling.
    pub fn check_account(&self, email_key: &str, ip: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() > RETAIN_THRESHOLD {
            failures.retain(|_, f| !self.forgiven(f, now));
        }
        let key = (email_key.to_owned(), ip);
        let mut current = failures
            .get(&key)
            .copied()
            .filter(|f| !self.forgiven(f, now))
            .unwrap_or(Failures {
                count: 0,
                last: now,
            });
        let wait = self
            .delay(current.count)
            .saturating_sub(now.saturating_duration_since(current.last));
        if !wait.is_zero() {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: whole_seconds(wait),
            });
        }
        if self.per_account.len() > RETAIN_THRESHOLD {
            self.per_account.retain_recent();
        }
        self.per_account
            .check_key(&key.0)
            .map_err(|not_until| too_many(&not_until))?;
        current.count = current.count.saturating_add(1);
        current.last = now;
        failures.insert(key, current);
        Ok(())
    }

    /// A successful login from `ip`: the pair's failures are forgotten.
    pub fn succeeded(&self, email_key: &str, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(email_key.to_owned(), ip));
    }

    /// The wait before the next attempt after `count` consecutive failures.
    fn delay(&self, count: u32) -> Duration {
        let Some(over) = count.checked_sub(self.limits.free_failures) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(over).unwrap_or(u32::MAX);
        self.limits
            .backoff_base
            .saturating_mul(factor)
            .min(self.limits.backoff_max)
    }

    /// Whether a pair has been quiet long enough after its last wait to start afresh.
    fn forgiven(&self, failures: &Failures, now: Instant) -> bool {
        now.saturating_duration_since(failures.last)
            >= self.delay(failures.count) + self.limits.backoff_max
    }
}

fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

fn too_many(not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> ApiError {
    ApiError::TooManyRequests {
        retry_after_secs: whole_seconds(not_until.wait_time_from(DefaultClock::default().now())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn throttle(free_failures: u32) -> LoginThrottle {
        LoginThrottle::new(LoginLimits {
            per_ip_per_minute: NonZeroU32::MAX,
            per_account_per_minute: NonZeroU32::MAX,
            free_failures,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        })
    }

    fn retry_after(result: Result<(), ApiError>) -> u64 {
        match result {
            Err(ApiError::TooManyRequests { retry_after_secs }) => retry_after_secs,
            other => panic!("expected 429, got {other:?}"),
        }
    }

    #[test]
    fn the_backoff_doubles_after_the_free_failures_up_to_the_maximum() {
        let throttle = throttle(2);

        let delays: Vec<u64> = (0..10).map(|n| throttle.delay(n).as_secs()).collect();

        assert_eq!(delays, [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(throttle.delay(u32::MAX).as_secs(), 60);
    }

    #[test]
    fn a_pair_in_backoff_does_not_hold_up_the_same_account_from_elsewhere() {
        let throttle = throttle(1);
        let attacker = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let owner = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

        throttle.check_account("me@x.com", attacker).expect("free");
        let wait = retry_after(throttle.check_account("me@x.com", attacker));

        assert_eq!(wait, 1);
        throttle
            .check_account("me@x.com", owner)
            .expect("the owner");
    }

    #[test]
    fn a_success_clears_the_failures_of_its_pair() {
        let throttle = throttle(1);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        throttle.check_account("me@x.com", ip).expect("free");

        throttle.succeeded("me@x.com", ip);

        throttle.check_account("me@x.com", ip).expect("afresh");
    }
}
