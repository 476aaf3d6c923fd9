//! Consistent single-file copies of a node's database, taken while the node runs.
//!
//! After a clean stop a WAL database keeps its data in `-wal`, so copying `node.sqlite3` alone
//! copies nothing. SQLite's online backup API copies every page as of one read transaction
//! (writers go on meanwhile); the copy is then switched out of WAL mode so the one file holds
//! everything, and only renamed into place once it is complete and on disk.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, backup::Backup};

use crate::{Result, StoreError};

/// Copies the database at `src` to `dest` (a single file, replaced atomically); returns its
/// size in bytes.
pub fn backup_file(src: &Path, dest: &Path) -> Result<u64> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Storage(format!(
            "backup of {} to {} failed: {what}: {e}",
            src.display(),
            dest.display()
        ))
    };
    if !src.is_file() {
        return Err(StoreError::Storage(format!(
            "no database at {}",
            src.display()
        )));
    }
    let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| fail("cannot open the database", &e))?;
    source
        .busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| fail("cannot configure the database", &e))?;
    let file_name = dest
        .file_name()
        .ok_or_else(|| fail("destination", &"is not a file name"))?
        .to_string_lossy();
    let tmp = dest.with_file_name(format!(".{file_name}.partial"));
    let _ = std::fs::remove_file(&tmp);
    {
        let mut copy = Connection::open(&tmp).map_err(|e| fail("cannot create the copy", &e))?;
        {
            let backup =
                Backup::new(&source, &mut copy).map_err(|e| fail("cannot start the copy", &e))?;
            // All pages in one step: one read transaction, so the copy is one consistent state
            // even while the hub keeps committing.
            backup.step(-1).map_err(|e| fail("copying pages", &e))?;
        }
        copy.pragma_update(None, "journal_mode", "DELETE")
            .map_err(|e| fail("making the copy one file", &e))?;
        let ok: String = copy
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| fail("checking the copy", &e))?;
        if ok != "ok" {
            return Err(fail("the copy does not check out", &ok));
        }
    }
    let file = std::fs::File::open(&tmp).map_err(|e| fail("reopening the copy", &e))?;
    file.sync_all().map_err(|e| fail("syncing the copy", &e))?;
    let size = file
        .metadata()
        .map_err(|e| fail("reading the copy", &e))?
        .len();
    std::fs::rename(&tmp, dest).map_err(|e| fail("moving the copy into place", &e))?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable only once the folder is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(size)
}
