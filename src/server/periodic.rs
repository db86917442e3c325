//! Periodic background work: one loop for every task that runs something every so often
//! until shutdown (pruning, sampling), instead of one hand-written `select!` each.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// Runs `round` every `period` (the first one a period from now) until `stop` is cancelled.
/// A round in progress when `stop` comes finishes first; the next is not started.
pub async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = stop.cancelled() => return,
        }
        round().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::sync::mpsc;

    use super::*;

    #[tokio::test]
    async fn rounds_come_once_a_period_and_stop_with_the_token() {
        const PERIOD: Duration = Duration::from_millis(40);
        let (tx, mut rounds) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(every(PERIOD, stop.clone(), move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Instant::now());
            }
        }));
        let mut last = started;
        for round in 0..3 {
            let at = tokio::time::timeout(Duration::from_secs(5), rounds.recv())
                .await
                .expect("a round within 5 s")
                .expect("the loop runs");
            assert!(
                at - last >= PERIOD,
                "round {round} came a period after the one before"
            );
            last = at;
        }
        let cancelled = Instant::now();
        stop.cancel();
        task.await.expect("the loop ends");
        // The loop is gone (so is its sender): any round left in the channel began before stop.
        while let Some(at) = rounds.recv().await {
            assert!(at < cancelled, "no round after stop");
        }
    }
}
