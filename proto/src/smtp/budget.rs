//! The memory every session together may spend on message buffers while
//! DATA is read: a safety net. Content goes to disk as it arrives, so a
//! session in DATA holds a fixed two chunks (one being filled, one being
//! written) whatever the size of its message; it reserves them at DATA and
//! gives them back at the verdict. When the budget is spent, DATA gets
//! `452 4.3.1` (RFC 5321 §4.2.2: insufficient system storage) and the client
//! tries again later: a flood of sessions cannot take the machine's memory.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The size of the pieces content is handed out in, and of a session's buffer.
pub const CHUNK: usize = 64 * 1024;

/// A shared budget of octets; clones share it.
#[derive(Clone)]
pub struct DataBudget {
    inner: Arc<Inner>,
}

struct Inner {
    limit: usize,
    used: AtomicUsize,
}

impl DataBudget {
    pub fn new(limit: usize) -> DataBudget {
        DataBudget { inner: Arc::new(Inner { limit, used: AtomicUsize::new(0) }) }
    }

    pub fn unlimited() -> DataBudget {
        DataBudget::new(usize::MAX)
    }

    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Octets reserved now, by every session.
    pub fn in_use(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Reserves `octets`; false (and nothing reserved) when that would pass the limit.
    pub(super) fn take(&self, octets: usize) -> bool {
        self.inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(octets).filter(|&total| total <= self.inner.limit)
            })
            .is_ok()
    }

    pub(super) fn give_back(&self, octets: usize) {
        self.inner.used.fetch_sub(octets, Ordering::AcqRel);
    }
}

impl Default for DataBudget {
    fn default() -> Self {
        DataBudget::unlimited()
    }
}

/// Two budgets are equal when they are the same budget.
impl PartialEq for DataBudget {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for DataBudget {}

impl fmt::Debug for DataBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataBudget({} of {})", self.in_use(), self.limit())
    }
}

/// Octets one message holds of a budget; given back when dropped.
#[derive(Debug, Default)]
pub(super) struct Reservation {
    budget: Option<DataBudget>,
    octets: usize,
}

impl Reservation {
    /// `octets` of the budget, or `None` when it cannot spare them.
    pub(super) fn start(budget: &DataBudget, octets: usize) -> Option<Reservation> {
        budget.take(octets).then(|| Reservation { budget: Some(budget.clone()), octets })
    }

    /// Gives everything back now.
    pub(super) fn release(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(std::mem::take(&mut self.octets));
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = DataBudget::new(3 * CHUNK);
        let mut first = Reservation::start(&budget, 2 * CHUNK).unwrap();
        let second = Reservation::start(&budget, CHUNK).unwrap();
        assert_eq!(budget.in_use(), 3 * CHUNK);
        assert!(Reservation::start(&budget, 1).is_none(), "spent");
        drop(second);
        assert!(Reservation::start(&budget, CHUNK).is_some(), "given back when dropped");
        first.release();
        assert_eq!(budget.in_use(), 0);
        drop(first);
        assert_eq!(budget.in_use(), 0, "released once only");
    }
}
