//! Durable acknowledgements without an fsync inside the write gate.
//!
//! The ingest writer commits with `synchronous=NORMAL`: SQLite appends the batch's frames to
//! the WAL and returns without syncing it. This thread then syncs the WAL file
//! (`fdatasync`) and only after that are the batch's senders answered, so "acknowledged" still
//! means "on disk across a power cut". Meanwhile the writer is already committing the next
//! batch, and workers and verdict rounds get the gate: the fsync (about 1.8 ms here, most of a
//! commit's time when it ran inside it) no longer holds anyone up but the batch that waits for
//! it, and one sync covers every batch committed before it began.
//!
//! Why this is as safe as `FULL`: WAL frames are written in order and each carries a checksum
//! chained to the previous one, so after a crash SQLite replays exactly the commits whose
//! frames are all on disk, in order. `fdatasync` returns once every frame written before the
//! call is on disk, so each batch answered after it survives, and whatever was committed
//! after it either survives whole or not at all (its senders were not answered and deliver
//! again). With `NORMAL` SQLite still syncs the WAL before each checkpoint and the WAL's new
//! header when it restarts. A process crash loses nothing committed: the frames are in the
//! OS's page cache.

use std::{
    path::{Path, PathBuf},
    sync::mpsc,
    thread::JoinHandle,
    time::Instant,
};

/// What the sync thread tells each waiting batch.
pub(crate) const SYNC_FAILED: &str =
    "the write-ahead log could not be synced to disk; check the disk and its free space";

/// The WAL file SQLite keeps beside `database`.
pub(crate) fn wal_file(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The sync thread: batches committed but not yet durable wait here for their answer.
pub(crate) struct WalSync<T: Send + 'static> {
    waiting: Option<mpsc::Sender<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> WalSync<T> {
    /// Starts the thread syncing `wal`. `answer` is called, on that thread, with every batch
    /// that was committed before a sync began, and whether the sync succeeded.
    pub(crate) fn spawn(
        wal: PathBuf,
        mut answer: impl FnMut(Vec<T>, Result<(), &'static str>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let (waiting, batches) = mpsc::channel::<T>();
        let thread = std::thread::Builder::new()
            .name("gc-status-wal-sync".into())
            .spawn(move || {
                // Ends once the writer has dropped its sender and everything queued is answered.
                while let Ok(first) = batches.recv() {
                    let mut due = vec![first];
                    due.extend(batches.try_iter());
                    let syncing = Instant::now();
                    let synced = sync(&wal);
                    metrics::histogram!("gc_status_ingest_sync_seconds")
                        .record(syncing.elapsed().as_secs_f64());
                    metrics::histogram!("gc_status_ingest_sync_batches").record(due.len() as f64);
                    answer(
                        due,
                        synced.map_err(|err| {
                            tracing::error!(
                                error = %err,
                                file = %wal.display(),
                                "{SYNC_FAILED}; answering 503"
                            );
                            SYNC_FAILED
                        }),
                    );
                }
            })?;
        Ok(WalSync {
            waiting: Some(waiting),
            thread: Some(thread),
        })
    }

    /// Queues `batch`, just committed, for the next sync.
    pub(crate) fn after_commit(&self, batch: T) {
        if let Some(waiting) = &self.waiting {
            // The thread only stops once this sender is gone.
            let _ = waiting.send(batch);
        }
    }

    /// Waits until every queued batch is answered.
    pub(crate) fn finish(mut self) {
        self.waiting = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opened anew each time: the sync must reach the file SQLite writes to now, whatever
/// happened to an earlier one.
fn sync(wal: &Path) -> std::io::Result<()> {
    std::fs::File::open(wal)?.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_file_sits_beside_the_database() {
        assert_eq!(
            wal_file(Path::new("/data/gc-status.db")),
            Path::new("/data/gc-status.db-wal")
        );
    }

    #[test]
    fn batches_are_answered_after_a_sync_in_order_and_all_before_finish_returns() {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal = dir.path().join("db-wal");
        std::fs::write(&wal, b"frames").expect("write");
        let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = answered.clone();
        let sync = WalSync::spawn(wal, move |batches: Vec<u32>, result| {
            assert_eq!(result, Ok(()));
            sink.lock().expect("lock").extend(batches);
        })
        .expect("spawn");
        for batch in 0..100 {
            sync.after_commit(batch);
        }
        sync.finish();
        assert_eq!(
            *answered.lock().expect("lock"),
            (0..100).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_wal_that_cannot_be_synced_fails_the_batches_waiting_for_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let results = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = results.clone();
        let sync = WalSync::spawn(dir.path().join("gone-wal"), move |batches, result| {
            for batch in batches {
                sink.lock().expect("lock").push((batch, result));
            }
        })
        .expect("spawn");
        sync.after_commit("first");
        sync.after_commit("second");
        sync.finish();
        assert_eq!(
            *results.lock().expect("lock"),
            vec![("first", Err(SYNC_FAILED)), ("second", Err(SYNC_FAILED))]
        );
    }
}
