//! Background loops that stop cleanly at shutdown: they claim nothing more once told to stop,
//! and the work they started (job runs, webhook attempts) may finish within a bound, since a
//! piece cut off mid-way waits for its lease to expire before another process takes it.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Tells a loop started by [`spawn`] to stop, and waits for it.
#[derive(Debug)]
pub struct Drain {
    what: &'static str,
    stop: watch::Sender<bool>,
    drained: watch::Receiver<bool>,
}

/// Starts `body` on the current runtime; it gets a receiver that turns `true` when it must
/// claim nothing more, and returns once its work in flight has ended.
pub fn spawn<F, Fut>(what: &'static str, body: F) -> (JoinHandle<()>, Drain)
where
    F: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (stop, stopped) = watch::channel(false);
    let (drained_tx, drained) = watch::channel(false);
    let work = body(stopped);
    let task = tokio::spawn(async move {
        work.await;
        let _ = drained_tx.send(true);
    });
    (
        task,
        Drain {
            what,
            stop,
            drained,
        },
    )
}

impl Drain {
    /// Stops claiming, then waits until the work in flight has ended, or `limit`.
    pub async fn drain(mut self, limit: Duration) {
        let _ = self.stop.send(true);
        let finished = tokio::time::timeout(limit, self.drained.wait_for(|done| *done)).await;
        if finished.is_err() {
            tracing::warn!(
                ?limit,
                what = self.what,
                "work still going at shutdown; leaving it to its leases"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_waits_for_the_work_in_flight_and_no_longer_than_its_limit() {
        let (_, quick) = spawn("quick", |mut stopped| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        let started = tokio::time::Instant::now();
        quick.drain(Duration::from_secs(5)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));

        let (_, stuck) = spawn("stuck", |_| std::future::pending::<()>());
        let started = tokio::time::Instant::now();
        stuck.drain(Duration::from_millis(100)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
