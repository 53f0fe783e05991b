//! A value read at most once per interval, however many requests ask for it at once.
//!
//! The unauthenticated ops endpoints (`/readyz`, `/metrics`) read the database. Served as
//! they come, a flood of them (or many load balancers and scrapers) would hold the pool's
//! connections that webhook intake needs, and Notion's deliveries would get 503. Through this,
//! they cost one read per interval: callers that arrive while a read is under way wait for it
//! and share its result.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use tokio::sync::Mutex;

pub struct Recent<T> {
    max_age: Duration,
    last: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Recent<T> {
    pub fn new(max_age: Duration) -> Self {
        Self { max_age, last: Mutex::new(None) }
    }

    /// The last value read, if it is younger than the interval; else a new one from `read`.
    pub async fn get<F, Fut>(&self, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        // Held across the read: that is what makes concurrent callers share it.
        let mut last = self.last.lock().await;
        if let Some((at, value)) = last.as_ref()
            && at.elapsed() < self.max_age
        {
            return value.clone();
        }
        let value = read().await;
        *last = Some((Instant::now(), value.clone()));
        value
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn callers_at_once_share_one_read_and_a_read_is_reused_until_it_ages() {
        let recent = Arc::new(Recent::new(Duration::from_millis(200)));
        let reads = Arc::new(AtomicU32::new(0));
        let read = |reads: Arc<AtomicU32>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            reads.fetch_add(1, Ordering::SeqCst) + 1
        };

        let callers: Vec<_> = (0..20)
            .map(|_| {
                let (recent, reads) = (recent.clone(), reads.clone());
                tokio::spawn(async move { recent.get(|| read(reads)).await })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), 1, "every caller got the one read");
        }
        assert_eq!(recent.get(|| read(reads.clone())).await, 1, "still fresh");
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(recent.get(|| read(reads.clone())).await, 2, "aged: read again");
    }
}
