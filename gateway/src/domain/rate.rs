//! Generic cell rate algorithm (GCRA): "at most `limit` events per `window`, with bursts up to
//! `limit`". One number of state per key (the theoretical arrival time), which keeps the in-process
//! limiter small and maps onto a single Redis key in cluster mode.

use super::UnixMs;

/// A limit such as "10 per minute".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub window_ms: i64,
}

impl RateLimit {
    pub const fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            window_ms: 60_000,
        }
    }

    pub const fn per_second(limit: u32) -> Self {
        Self {
            limit,
            window_ms: 1_000,
        }
    }

    fn interval_ms(&self) -> f64 {
        self.window_ms as f64 / f64::from(self.limit.max(1))
    }
}

/// What the limiter decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Refused; the caller may retry after this many milliseconds.
    Limited {
        retry_after_ms: i64,
    },
}

impl RateDecision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, RateDecision::Allowed)
    }
}

/// State of one key: the theoretical arrival time, in fractional milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GcraState {
    tat: f64,
}

impl GcraState {
    /// Decides one event at `now` and, when allowed, advances the state.
    pub fn check(&mut self, limit: RateLimit, now: UnixMs) -> RateDecision {
        self.check_n(limit, now, 1)
    }

    /// Decides `cost` events at once (a publish to `cost` recipients): allowed when the budget holds
    /// all of them, and then all are counted. A cost above `limit` is never allowed.
    pub fn check_n(&mut self, limit: RateLimit, now: UnixMs, cost: u32) -> RateDecision {
        if limit.limit == 0 || cost > limit.limit {
            return RateDecision::Limited {
                retry_after_ms: limit.window_ms,
            };
        }
        let now = now as f64;
        let interval = limit.interval_ms();
        let tolerance = limit.window_ms as f64 - interval;
        let tat = self.tat.max(now);
        let extra = f64::from(cost.max(1) - 1) * interval;
        let allow_at = tat + extra - tolerance;
        if now < allow_at {
            return RateDecision::Limited {
                retry_after_ms: (allow_at - now).ceil() as i64,
            };
        }
        self.tat = tat + extra + interval;
        RateDecision::Allowed
    }

    /// When this key's state no longer matters (it has fully refilled), for sweeping.
    pub fn idle_after(&self) -> UnixMs {
        self.tat.ceil() as UnixMs
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_weighted_check_takes_the_whole_cost_or_nothing() {
        let limit = RateLimit::per_second(10);
        let mut state = GcraState::default();
        assert!(state.check_n(limit, 0, 10).is_allowed(), "a full burst at once");
        assert!(!state.check_n(limit, 0, 1).is_allowed(), "nothing left");
        let mut fresh = GcraState::default();
        assert!(
            !fresh.check_n(limit, 0, 11).is_allowed(),
            "more than the limit never passes"
        );
        assert!(fresh.check_n(limit, 0, 4).is_allowed(), "a refused cost spent nothing");
        assert!(fresh.check_n(limit, 0, 6).is_allowed());
        match fresh.check_n(limit, 0, 5) {
            RateDecision::Limited { retry_after_ms } => assert_eq!(retry_after_ms, 500, "five tenths of a second"),
            RateDecision::Allowed => panic!("over the budget"),
        }
        assert!(fresh.check_n(limit, 500, 5).is_allowed());
    }

    use super::*;

    #[test]
    fn allows_the_limit_then_refuses_with_retry_after() {
        let limit = RateLimit::per_minute(10);
        let mut state = GcraState::default();
        for _ in 0..10 {
            assert_eq!(state.check(limit, 1_000), RateDecision::Allowed);
        }
        match state.check(limit, 1_000) {
            RateDecision::Limited { retry_after_ms } => assert_eq!(retry_after_ms, 6_000),
            other => panic!("expected limited, got {other:?}"),
        }
        assert_eq!(state.check(limit, 7_000), RateDecision::Allowed);
    }

    #[test]
    fn refills_completely_after_the_window() {
        let limit = RateLimit::per_second(10);
        let mut state = GcraState::default();
        for _ in 0..10 {
            assert!(state.check(limit, 0).is_allowed());
        }
        assert!(!state.check(limit, 0).is_allowed());
        for _ in 0..10 {
            assert!(state.check(limit, 1_000).is_allowed());
        }
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let mut state = GcraState::default();
        assert!(!state.check(RateLimit::per_minute(0), 0).is_allowed());
    }
}
