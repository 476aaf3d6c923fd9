//! Moves WAL checkpoints off the writer: a background thread copies committed pages into the
//! database file every few hundred milliseconds, so the hub's one writer spends its time on
//! writes (SQLite's own checkpoint would run inside every ~1000th commit, on that thread).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::Connection;

/// How often the background checkpoint runs.
const EVERY: Duration = Duration::from_millis(200);
/// WAL pages after which the writer checkpoints itself anyway (SQLite's default is 1000):
/// a backstop for when the background thread cannot keep up.
pub(crate) const WRITER_BACKSTOP_PAGES: i64 = 20_000;

/// Stops the thread when dropped (with the store) and waits for it, so its connection is
/// closed when the store is (a store opened again at once finds the file free).
pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` with a connection of its own.
    pub(crate) fn start(path: &Path) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(1))?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || {
                let (lock, wake) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*stopped {
                    stopped = wake
                        .wait_timeout(stopped, EVERY)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    if *stopped {
                        break;
                    }
                    // PASSIVE: copies what it can without waiting on readers or the writer.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "background checkpoint failed; retrying");
                    }
                }
            });
        let thread = match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "no background checkpoint thread; SQLite checkpoints inline");
                None
            }
        };
        Ok(Checkpointer { stop, thread })
    }
}
