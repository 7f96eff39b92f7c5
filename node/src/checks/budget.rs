//! The DNS time of one message: all the look-ups its checks make (block
//! lists, reverse DNS, the sender's domain, SPF, DKIM keys, DMARC), from
//! MAIL FROM to the end of DATA, share one budget (`checks.dns_budget`).
//! Only the time spent asking counts, not the client's own pauses. A check
//! whose look-ups run out of it gets `temperror`, as a dead resolver would
//! give it, so a dead resolver costs a message the budget and no more.
//! Time is the caller's.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsBudget {
    left: Duration,
}

impl Default for DnsBudget {
    fn default() -> Self {
        DnsBudget::new(crate::settings::DEFAULT_DNS_BUDGET)
    }
}

impl DnsBudget {
    pub fn new(total: Duration) -> DnsBudget {
        DnsBudget { left: total }
    }

    /// When a step started at `now` must be done.
    pub fn deadline(&self, now: Instant) -> Instant {
        now + self.left
    }

    /// A step ran from `started` to `ended`: its time is spent.
    pub fn spend(&mut self, started: Instant, ended: Instant) {
        self.left = self.left.saturating_sub(ended.saturating_duration_since(started));
    }

    pub fn is_spent(&self) -> bool {
        self.left.is_zero()
    }

    pub fn left(&self) -> Duration {
        self.left
    }

    /// Runs `step` with what is left (it is given its deadline), and spends
    /// the time it took.
    pub async fn run<T, F: Future<Output = T>>(&mut self, step: impl FnOnce(Instant) -> F) -> T {
        let started = Instant::now();
        let done = step(self.deadline(started)).await;
        self.spend(started, Instant::now());
        done
    }

    /// Runs `step` until the deadline; `None` when it had to be cut short.
    /// A step that is done at once (an answer from the cache, a message
    /// with nothing to look up) is done even with nothing left.
    pub async fn within<T>(&mut self, step: impl Future<Output = T>) -> Option<T> {
        self.run(|deadline| tokio::time::timeout_at(deadline, step)).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_spend_their_time_and_pauses_between_them_cost_nothing() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut budget = DnsBudget::new(Duration::from_secs(2));
        assert_eq!(budget.deadline(at(0)), at(2000));
        budget.spend(at(0), at(1500));
        // The client takes a minute to send its DATA: not the budget's time.
        assert_eq!(budget.deadline(at(60_000)), at(60_500));
        budget.spend(at(60_000), at(61_000));
        assert!(budget.is_spent() && budget.left().is_zero(), "never below zero");
        assert_eq!(budget.deadline(at(70_000)), at(70_000));
    }

    #[tokio::test]
    async fn a_step_that_hangs_is_cut_at_what_is_left_and_then_nothing_waits() {
        let mut budget = DnsBudget::new(Duration::from_millis(600));
        let quick = budget.within(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            "answer"
        });
        assert_eq!(quick.await, Some("answer"));
        assert!(budget.left() <= Duration::from_millis(500), "{:?}", budget.left());
        let started = Instant::now();
        assert_eq!(budget.within(std::future::pending::<()>()).await, None);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(3), "{waited:?}");
        assert!(budget.is_spent());
        let started = Instant::now();
        assert_eq!(budget.within(std::future::pending::<()>()).await, None);
        assert!(started.elapsed() < Duration::from_millis(100), "spent: no more waiting");
        assert_eq!(budget.within(async { "cached" }).await, Some("cached"), "what needs no wait is done");
    }
}
