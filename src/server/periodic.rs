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
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };

    use super::*;

    #[tokio::test]
    async fn rounds_come_once_a_period_and_stop_with_the_token() {
        let rounds = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(every(Duration::from_millis(40), stop.clone(), {
            let rounds = rounds.clone();
            move || {
                let rounds = rounds.clone();
                async move {
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            rounds.load(Ordering::Relaxed),
            0,
            "the first round waits a period"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = rounds.load(Ordering::Relaxed);
        assert!(
            (2..=6).contains(&seen),
            "{seen} rounds in 220 ms at one per 40 ms"
        );
        stop.cancel();
        task.await.expect("the loop ends");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(rounds.load(Ordering::Relaxed), seen, "no round after stop");
    }
}
