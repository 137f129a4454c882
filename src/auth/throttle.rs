//! Login throttling per client IP and per account (the `governor` crate's GCRA limiters), so
//! password guessing is slow whether it spreads over accounts or over addresses.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Above this many tracked keys, forget the ones whose quota has fully recovered.
const RETAIN_THRESHOLD: usize = 10_000;

/// The two limiters of `POST /auth/tokens/obtain/`.
#[derive(Debug)]
pub struct LoginThrottle {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
}

impl LoginThrottle {
    /// Limiters allowing the given numbers of attempts per minute (as a burst, then evenly).
    pub fn new(per_ip_per_minute: NonZeroU32, per_account_per_minute: NonZeroU32) -> Self {
        Self {
            per_ip: RateLimiter::keyed(Quota::per_minute(per_ip_per_minute)),
            per_account: RateLimiter::keyed(Quota::per_minute(per_account_per_minute)),
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

    /// Counts an attempt on the account `email_key`; 429 with `Retry-After` when over quota.
    pub fn check_account(&self, email_key: &str) -> Result<(), ApiError> {
        if self.per_account.len() > RETAIN_THRESHOLD {
            self.per_account.retain_recent();
        }
        self.per_account
            .check_key(&email_key.to_owned())
            .map_err(|not_until| too_many(&not_until))
    }
}

fn too_many(not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> ApiError {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    ApiError::TooManyRequests {
        retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}
