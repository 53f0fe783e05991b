//! When a step worker looks for jobs: as soon as it is told jobs were committed, once more a
//! moment later, and on a poll interval (jobs scheduled for later, lost notifications).
//!
//! apalis 1.0's strategies lose wake-ups, which left 1-2.5% of jobs on an idle service waiting
//! 60-135 ms (up to the poll interval) instead of ~3 ms:
//! - `with_pubsub()`'s `StreamStrategy` polls the notification stream once per worker poll and
//!   ignores what it yields. A stream that has just yielded an item holds no waker, and nothing
//!   polls it again until the worker is woken by something else: the next notification then
//!   wakes nobody. (Seen in a trace: a notification consumed while a fetch was in flight, the
//!   fetch came back empty, and the next job's notification 140 ms later woke no one until the
//!   poll interval did.)
//! - `IntervalStrategy` replaces a fired timer without polling the new one, so it only wakes
//!   the worker if something else polls the worker in between.
//! - A notification consumed while a fetch that began before the job's commit is in flight:
//!   that fetch comes back empty, and the notification is spent.
//!
//! [`WakeStrategy`] drains the stream until it is pending (so it is always armed), keeps its
//! timers armed, and after every notification arms a recheck a few milliseconds later, which
//! makes the worker fetch once more after any fetch that may have raced the commit. A stream
//! that ends (its connection could not be made or was closed for good) is made again after a
//! pause; meanwhile the interval still finds jobs.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{PollSnapshot, PollStrategy};
use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep, sleep};

/// How long after the latest notification the worker fetches once more: longer than an idle
/// fetch takes (~1 ms), far below the pickup bound (50 ms). It costs one fetch per wake-up only
/// while notifications are sparse: each new one puts the recheck off again, and a busy worker
/// is woken by its own work anyway. A racing fetch still running at the recheck (a loaded
/// database) leaves the job to the poll interval, as before.
const RECHECK_AFTER: Duration = Duration::from_millis(10);
/// How long to wait before making a notification stream again after it ended.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// Most notifications taken in one poll; a stream that never stops yielding cannot starve the
/// worker (it is woken again to take the rest).
const MAX_DRAIN: usize = 1024;

/// A [`PollStrategy`] that wakes a worker on notifications from a stream made by `connect`, a
/// recheck after each, and a poll interval.
pub struct WakeStrategy<S> {
    connect: Box<dyn Fn() -> S + Send + Sync>,
    notifications: Option<S>,
    reconnect: Option<Pin<Box<Sleep>>>,
    recheck: Option<Pin<Box<Sleep>>>,
    tick: Option<Pin<Box<Sleep>>>,
    interval: Duration,
    recheck_after: Duration,
    reconnect_after: Duration,
}

impl<S> WakeStrategy<S> {
    /// `connect` makes the notification stream (now, and again whenever it ends); every item it
    /// yields, error or not, means "look for jobs".
    pub fn new(connect: impl Fn() -> S + Send + Sync + 'static, interval: Duration) -> Self {
        let notifications = Some(connect());
        Self {
            connect: Box::new(connect),
            notifications,
            reconnect: None,
            recheck: None,
            tick: None,
            interval,
            recheck_after: RECHECK_AFTER,
            reconnect_after: RECONNECT_AFTER,
        }
    }

    #[cfg(test)]
    fn with_delays(mut self, recheck_after: Duration, reconnect_after: Duration) -> Self {
        self.recheck_after = recheck_after;
        self.reconnect_after = reconnect_after;
        self
    }
}

impl<S: Stream + Unpin> WakeStrategy<S> {
    /// Takes every notification that has arrived, leaving the stream pending (so armed with
    /// this poll's waker). True if there was any.
    fn drain_notifications(&mut self, cx: &mut Context<'_>) -> bool {
        let mut notified = false;
        if self.notifications.is_none() {
            if !fired(&mut self.reconnect, cx) {
                return false;
            }
            tracing::info!("step worker: listening for job notifications again");
            self.notifications = Some((self.connect)());
            // Notifications sent while there was no stream are lost: look now.
            notified = true;
        }
        let Some(stream) = self.notifications.as_mut() else { return notified };
        for _ in 0..MAX_DRAIN {
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(_)) => notified = true,
                Poll::Ready(None) => {
                    tracing::warn!(
                        retry_in_ms = self.reconnect_after.as_millis() as u64,
                        "step worker: job notifications stopped; jobs are found by polling until they resume"
                    );
                    self.notifications = None;
                    self.reconnect = Some(Box::pin(sleep(self.reconnect_after)));
                    fired(&mut self.reconnect, cx);
                    return notified;
                }
                Poll::Pending => return notified,
            }
        }
        // Still yielding: come back for the rest after the worker has had its turn.
        cx.waker().wake_by_ref();
        notified
    }

    /// Polls the interval timer, re-arming it (and polling the new one) when it fires.
    fn poll_tick(&mut self, cx: &mut Context<'_>) -> bool {
        let interval = self.interval;
        let tick = self.tick.get_or_insert_with(|| Box::pin(sleep(interval)));
        let mut fired = false;
        while tick.as_mut().poll(cx).is_ready() {
            fired = true;
            tick.as_mut().reset(Instant::now() + interval);
        }
        fired
    }
}

impl<S: Stream + Unpin> PollStrategy for WakeStrategy<S> {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let notified = self.drain_notifications(cx);
        if notified {
            // Put off (or arm) the recheck; the timer is reused, not made anew per wake-up.
            let at = Instant::now() + self.recheck_after;
            match self.recheck.as_mut() {
                Some(recheck) => recheck.as_mut().reset(at),
                None => self.recheck = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        // Every source is polled on every call, so each one holds this call's waker.
        let rechecked = fired(&mut self.recheck, cx);
        let ticked = self.poll_tick(cx);
        if notified || rechecked || ticked { Poll::Ready(Some(())) } else { Poll::Pending }
    }
}

impl<S> std::fmt::Debug for WakeStrategy<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeStrategy")
            .field("listening", &self.notifications.is_some())
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// Polls a one-shot timer; true (and the timer cleared) once it has fired.
fn fired(timer: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
    let Some(t) = timer.as_mut() else { return false };
    if t.as_mut().poll(cx).is_pending() {
        return false;
    }
    *timer = None;
    true
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Wake, Waker},
    };

    use futures::channel::mpsc;

    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Harness<S> {
        strategy: WakeStrategy<S>,
        wakes: Arc<Wakes>,
        waker: Waker,
    }

    impl<S: Stream + Unpin> Harness<S> {
        fn new(strategy: WakeStrategy<S>) -> Self {
            let wakes = Arc::new(Wakes::default());
            let waker = Waker::from(wakes.clone());
            Self { strategy, wakes, waker }
        }

        fn drive(&mut self) -> Poll<Option<()>> {
            let mut cx = Context::from_waker(&self.waker);
            self.strategy.poll_drive(&mut cx, &PollSnapshot::default())
        }

        fn wakes(&self) -> usize {
            self.wakes.0.load(Ordering::SeqCst)
        }

        /// Waits (with a deadline) until the worker has been woken more than `seen` times.
        async fn woken_after(&self, seen: usize) -> bool {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.wakes() > seen {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            false
        }
    }

    fn channel_strategy() -> (mpsc::UnboundedSender<()>, WakeStrategy<mpsc::UnboundedReceiver<()>>) {
        let (tx, rx) = mpsc::unbounded();
        let rx = std::sync::Mutex::new(Some(rx));
        let strategy = WakeStrategy::new(move || rx.lock().unwrap().take().expect("connected once"), LONG);
        (tx, strategy)
    }

    #[tokio::test]
    async fn a_notification_after_one_was_taken_still_wakes_the_worker() {
        let (tx, strategy) = channel_strategy();
        let mut h = Harness::new(strategy);
        tx.unbounded_send(()).unwrap();
        assert_eq!(h.drive(), Poll::Ready(Some(())), "a waiting notification wakes");

        // The worker is not polled again before the next notification (it went on to a fetch
        // that came back empty): the notification alone must wake it.
        let seen = h.wakes();
        tx.unbounded_send(()).unwrap();
        assert!(h.wakes() > seen, "the second notification woke nobody");
        assert_eq!(h.drive(), Poll::Ready(Some(())));
    }

    #[tokio::test]
    async fn every_waiting_notification_is_taken_in_one_poll() {
        let (tx, strategy) = channel_strategy();
        let mut h = Harness::new(strategy.with_delays(LONG, LONG));
        for _ in 0..3 {
            tx.unbounded_send(()).unwrap();
        }
        assert_eq!(h.drive(), Poll::Ready(Some(())));
        assert_eq!(h.drive(), Poll::Pending, "notifications were left for later polls");
    }

    #[tokio::test]
    async fn a_notification_is_followed_by_a_recheck() {
        let (tx, strategy) = channel_strategy();
        let mut h = Harness::new(strategy.with_delays(Duration::from_millis(20), LONG));
        tx.unbounded_send(()).unwrap();
        assert_eq!(h.drive(), Poll::Ready(Some(())));
        assert_eq!(h.drive(), Poll::Pending, "the recheck is later, not at once");

        // No new notification: the recheck alone wakes the worker, once.
        let seen = h.wakes();
        assert!(h.woken_after(seen).await, "no recheck after a notification");
        assert_eq!(h.drive(), Poll::Ready(Some(())));
        assert_eq!(h.drive(), Poll::Pending, "a recheck is one fetch, not a loop");
    }

    #[tokio::test]
    async fn the_interval_keeps_waking_the_worker_without_notifications() {
        let (_tx, strategy) = channel_strategy();
        let mut h = Harness::new(WakeStrategy { interval: Duration::from_millis(20), ..strategy });
        assert_eq!(h.drive(), Poll::Pending);
        let seen = h.wakes();
        assert!(h.woken_after(seen).await, "the interval never fired");
        assert_eq!(h.drive(), Poll::Ready(Some(())));

        // Not polled again after the tick: the next tick must still wake it.
        let seen = h.wakes();
        assert!(h.woken_after(seen).await, "the re-armed interval was never polled");
    }

    #[tokio::test]
    async fn an_ended_notification_stream_is_made_again() {
        let connects = Arc::new(AtomicUsize::new(0));
        let counted = connects.clone();
        let strategy = WakeStrategy::new(
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
                futures::stream::empty::<()>()
            },
            LONG,
        )
        .with_delays(LONG, Duration::from_millis(20));
        let mut h = Harness::new(strategy);
        assert_eq!(h.drive(), Poll::Pending, "an ended stream is not a notification");
        assert_eq!(connects.load(Ordering::SeqCst), 1);

        let seen = h.wakes();
        assert!(h.woken_after(seen).await, "no wake to make the stream again");
        assert_eq!(h.drive(), Poll::Ready(Some(())), "after a gap, look for jobs at once");
        assert_eq!(connects.load(Ordering::SeqCst), 2);
    }
}
