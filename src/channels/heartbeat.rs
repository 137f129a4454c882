//! One heartbeat for every SSE stream of the process: a task bumps a `watch` every period and
//! each stream waits on its receiver (16 bytes) instead of keeping a timer of its own. The
//! comment it sends is the shared [`super::frame::KEEP_ALIVE`]. A write to a client that went
//! fails at the next beat, which ends its stream.

use std::time::Duration;

use tokio::sync::watch;

/// The process's heartbeat (clones share it).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    sender: watch::Sender<()>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    /// A heartbeat that beats once [`Self::spawn`] runs it.
    pub fn new() -> Self {
        Self {
            sender: watch::channel(()).0,
        }
    }

    /// What a new stream waits on: changes at every beat after now.
    pub fn receiver(&self) -> watch::Receiver<()> {
        self.sender.subscribe()
    }

    /// Beats every `period` (the first one a period from now) on the current runtime.
    pub fn spawn(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let sender = self.sender.clone();
        tokio::spawn(async move {
            let period = period.max(Duration::from_millis(10));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                sender.send_replace(());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_receiver_sees_each_beat() {
        let heartbeat = Heartbeat::new();
        let (mut a, mut b) = (heartbeat.receiver(), heartbeat.receiver());
        let task = heartbeat.spawn(Duration::from_millis(20));
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(1), a.changed())
                .await
                .expect("a beat within a second")
                .expect("the heartbeat is alive");
        }
        tokio::time::timeout(Duration::from_secs(1), b.changed())
            .await
            .expect("a beat within a second")
            .expect("the heartbeat is alive");
        task.abort();
    }
}
