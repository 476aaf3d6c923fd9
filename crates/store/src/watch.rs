//! Telling the node when a table changed, whichever path wrote it (a write at the hub, a
//! till's local commit, a merge, a snapshot, a history page): the writer connection's own
//! SQLite hooks see every row it changes, so no path can forget to announce one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use capsule_protocol::Row;

use crate::{Result, Store};

impl Store {
    /// Calls `on_change` after each committed transaction that changed rows of `table` (one
    /// table at a time: a later call replaces the watch). `on_change` runs inside the commit
    /// and must only wake someone: [`Store::table_rows_committed`] reads the result.
    pub fn watch_table(&self, table: &str, on_change: Arc<dyn Fn() + Send + Sync>) {
        let conn = self.writer();
        let dirty = Arc::new(AtomicBool::new(false));
        let (name, touched) = (table.to_string(), dirty.clone());
        conn.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, t: &str, _: i64| {
                if t == name {
                    touched.store(true, Ordering::Relaxed);
                }
            },
        ));
        let committed = dirty.clone();
        conn.commit_hook(Some(move || {
            if committed.swap(false, Ordering::Relaxed) {
                on_change();
            }
            // false: let the commit go on.
            false
        }));
        conn.rollback_hook(Some(move || dirty.store(false, Ordering::Relaxed)));
    }

    /// The rows of `table`, read on the writer connection: after the commit that announced a
    /// change has finished.
    pub fn table_rows_committed(&self, table: &str) -> Result<Vec<Row>> {
        let t = self.table_def(table)?;
        let conn = self.writer();
        crate::sql::select_rows(&conn, t, "1", &[])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn a_watched_table_is_announced_once_per_commit_that_changed_it_and_never_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path().join("s.db"),
            Arc::new(capsule_protocol::Schema::builtin()),
        )
        .unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        store.watch_table(
            "device",
            Arc::new(move || {
                s.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let conn = store.writer();
        conn.execute_batch("BEGIN; INSERT INTO device (id) VALUES ('a'); ROLLBACK;")
            .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 0, "a rolled back change");
        conn.execute_batch("UPDATE _meta SET value = value WHERE key = 'x'")
            .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 0, "another table");
        conn.execute_batch(
            "BEGIN; INSERT INTO device (id) VALUES ('a'); INSERT INTO device (id) VALUES ('b'); COMMIT;",
        )
        .unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 1);
        drop(conn);
        assert_eq!(store.table_rows_committed("device").unwrap().len(), 2);
    }
}
