//! A bulkhead: at most `max_concurrent` calls at once, with a bounded wait
//! for a slot; when none frees up in `max_wait`, the call fails fast
//! (a `transient` failure with a retry-after hint) instead of queueing
//! without bound. A tokio `Semaphore` (DEPENDENCIES.md).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a call got no slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkheadFull {
    /// Which bulkhead: `upstream:<name>` or `tool:<upstream>/<tool>`.
    pub bulkhead: String,
    /// Its size.
    pub max_concurrent: usize,
    /// A suggested wait before trying again, in ms (the configured wait).
    pub retry_after_ms: u64,
}

/// One bulkhead.
pub struct Bulkhead {
    name: String,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    max_wait: Duration,
}

impl Bulkhead {
    /// `max_concurrent` slots (0 = no limit), waiting at most `max_wait`.
    pub fn new(name: impl Into<String>, max_concurrent: usize, max_wait: Duration) -> Self {
        let size = if max_concurrent == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max_concurrent
        };
        Self {
            name: name.into(),
            slots: Arc::new(Semaphore::new(size)),
            max_concurrent,
            max_wait,
        }
    }

    /// Takes a slot, waiting up to `max_wait`; the slot is freed on drop.
    ///
    /// # Errors
    /// [`BulkheadFull`] if no slot freed up in time.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, BulkheadFull> {
        let full = || BulkheadFull {
            bulkhead: self.name.clone(),
            max_concurrent: self.max_concurrent,
            retry_after_ms: u64::try_from(self.max_wait.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        };
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        match tokio::time::timeout(self.max_wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(full()),
        }
    }

    /// Calls inside now.
    pub fn in_use(&self) -> usize {
        if self.max_concurrent == 0 {
            Semaphore::MAX_PERMITS - self.slots.available_permits()
        } else {
            self.max_concurrent - self.slots.available_permits()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_bulkhead_waits_then_refuses_and_a_freed_slot_is_reused() {
        let b = Bulkhead::new("upstream:x", 1, Duration::from_millis(100));
        let held = b.enter().await.expect("first slot");
        assert_eq!(b.in_use(), 1);
        let started = tokio::time::Instant::now();
        let refused = b.enter().await.expect_err("full");
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(100),
            "waited max_wait"
        );
        assert_eq!(refused.retry_after_ms, 100);
        // A slot freed while waiting is taken.
        let waiter = tokio::spawn(async move { b.enter().await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(waiter.await.expect("task"));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_unlimited() {
        let b = Bulkhead::new("upstream:x", 0, Duration::ZERO);
        let permits: Vec<_> = futures_util::future::join_all((0..1000).map(|_| b.enter())).await;
        assert!(permits.iter().all(Result::is_ok));
    }
}
