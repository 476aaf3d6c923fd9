//! Feeds the stream from the capsule log, so frames leave strictly after their commit and in
//! stream order, whichever request committed them.

use std::sync::Arc;

use capsule_store::{Store, meta};
use tokio::sync::Notify;

use crate::stream::Stream;

/// Capsules read from the log per step.
const READ_BATCH: usize = 1000;

pub struct Publisher {
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn start(store: Arc<Store>, stream: Stream) -> capsule_store::Result<Publisher> {
        let start = store.meta_i64(meta::STREAM_SEQ)?;
        stream.set_position(start, store.meta_i64(meta::VERSION)?);
        let notify = Arc::new(Notify::new());
        let wake = notify.clone();
        let task = tokio::spawn(async move {
            let mut last = start;
            loop {
                wake.notified().await;
                loop {
                    let s = store.clone();
                    let batch = match tokio::task::spawn_blocking(move || {
                        s.capsules_since(last, READ_BATCH)
                    })
                    .await
                    {
                        Ok(Ok(b)) => b,
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "reading the capsule log failed; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            continue;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "capsule log reader panicked");
                            break;
                        }
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for c in batch {
                        last = c.seq;
                        stream.publish(c.seq, c.capsule);
                    }
                }
            }
        });
        Ok(Publisher { notify, task })
    }

    /// Wakes the publisher after a commit.
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
