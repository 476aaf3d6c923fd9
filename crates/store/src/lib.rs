//! Capsule POS storage: one SQLite file per node, shaped by the schema.
//!
//! The hub applies mutations here ([`Store::apply`]), which assigns versions, computes derived
//! state and logs capsules in the same transaction. A till merges pulled parts here
//! ([`Store::merge_pulled`]). Both read parts the same way ([`Store::pull`]). The store knows
//! nothing about HTTP or WebSockets; its API is blocking, so async callers use
//! `spawn_blocking`.

pub mod audit;
mod backfill;
#[cfg(test)]
mod backfill_tests;
mod backup;
mod checkpoint;
mod commands;
mod ddl;
mod derive;
mod handover;
#[cfg(test)]
mod handover_tests;
#[cfg(test)]
mod hardening_tests;
mod history;
mod merge;
mod outbox;
#[cfg(test)]
mod outbox_fair_tests;
#[cfg(test)]
mod outbox_tests;
pub mod permits;
#[cfg(test)]
mod permits_tests;
mod pipeline;
mod print_queue;
mod prune;
#[cfg(test)]
mod prune_tests;
mod read;
mod report;
mod rules;
mod scope;
mod shadow;
mod snapshot_stream;
mod sql;
#[cfg(test)]
mod tests;
mod walvfs;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use capsule_protocol::Schema;
use rusqlite::{Connection, OptionalExtension, params};

pub use backfill::{BackfillAt, MAX_BACKFILL_PAGE, MERGE_CHUNK};
pub use backup::backup_file;
pub use handover::{Claim, Clock, MAX_TERM, VERSIONS_PER_TERM};
pub use history::{MAX_ORDER_PAGE, OrderHit, OrderPage, OrderQuery};
pub use merge::MergeOutcome;
pub use outbox::{LocalApplied, MAX_WAITING_PER_CLIENT, OutboxRequest};
pub use pipeline::{Applied, ApplyMode, LoggedCapsule, PreparedBatch};
pub use print_queue::{
    Enqueued, MAX_WAITING_PER_PRINTER, NewPrintJob, PRINT_JOB_EXPIRES_MS, PrintDue, PrintJob,
};
pub use prune::{KEEP_DAYS, Pruned};
pub use report::{MethodRow, Report, SalesRow, ShiftRow};
pub use scope::{SCREEN_FINISHED_ORDERS, Scope};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request is malformed or breaks a schema rule (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The named entity or row does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with stored data, e.g. inserting an existing id (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is not what the schema says: {0}")]
    Corrupt(String),
    /// The database file cannot be used as this node needs it (read-only, wrong owner, a
    /// backup that cannot be written).
    #[error("{0}")]
    Storage(String),
    /// This node is not (or no longer) the hub, so it cannot write authoritatively (HTTP 503).
    #[error("{0}")]
    NotHub(String),
    /// A child row names a parent this store does not hold (yet): after a failover the
    /// parent's write may still be on its way from another node (HTTP 424, retried).
    #[error("{0}")]
    MissingParent(String),
    /// The asked-for history is no longer (or not yet) kept here (HTTP 410).
    #[error("{0}")]
    Gone(String),
    /// The write's staff member (or their approver) lacks the permission it needs (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// The sender has as much waiting as it may have; it tries again later (HTTP 429).
    #[error("{0}")]
    Busy(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Keys of the `_meta` table.
pub mod meta {
    /// This node's stable id, made on first open.
    pub const NODE_ID: &str = "node_id";
    /// Hub: last version handed out. Till: hub version its snapshot was consistent at.
    pub const VERSION: &str = "version";
    /// Hub: last capsule stream sequence logged. Till: last stream sequence applied.
    pub const STREAM_SEQ: &str = "stream_seq";
    /// Till: the node id of the hub its data came from.
    pub const HUB_NODE_ID: &str = "hub_node_id";
    /// Till: highest hub version its merged stream has carried (outbox entries at or below it
    /// are back from the hub).
    pub const MERGED_VERSION: &str = "merged_version";
    /// Till: last provisional order number handed out.
    pub const PROVISIONAL_NEXT: &str = "provisional_next";
    /// Highest hub term this node has seen; written before a claim takes effect.
    pub const TERM: &str = "term";
    /// Till: the term of the hub its data and stream position came from.
    pub const HUB_TERM: &str = "hub_term";
    /// Tombstones (`_gone`) are complete for deletions after this version.
    pub const GONE_SINCE: &str = "gone_since";
    /// Replica: highest hub version of the hub's journal it has copied.
    pub const JOURNAL_VERSION: &str = "journal_version";
}

/// Adds the SQLite steps `conn` runs to `steps`, in hundreds.
#[cfg(test)]
fn count_steps(conn: &Connection, steps: &Arc<std::sync::atomic::AtomicU64>) {
    let steps = steps.clone();
    conn.progress_handler(
        100,
        Some(move || {
            steps.fetch_add(100, std::sync::atomic::Ordering::Relaxed);
            false
        }),
    );
}

/// How many read connections are kept open for reuse.
const READ_POOL_SIZE: usize = 4;

/// A node's SQLite database.
pub struct Store {
    schema: Arc<Schema>,
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    node_id: String,
    durability: Durability,
    /// Whether this store may apply writes as the hub (cleared when a hub steps down, so a
    /// write already queued behind the step-down is refused, never applied at the old term).
    authority: std::sync::atomic::AtomicBool,
    /// A follower that copies its hub's journal (one that may become hub) notes the entities
    /// it merges before their journal entries are here (`_unjournaled`).
    keeps_journal: std::sync::atomic::AtomicBool,
    /// An elected hub's authority lasts only as long as its controller keeps renewing it
    /// ([`Store::hold_authority_for`]): a process or machine that stood still (SIGSTOP, a
    /// freeze, a suspend) wakes with it expired and refuses writes before anything else runs,
    /// until its controller has looked at the mesh again. None: no lease (a fixed hub).
    lease: Mutex<Option<handover::Lease>>,
    clock: handover::Clock,
    fail_next_claim: std::sync::atomic::AtomicBool,
    /// SQLite virtual-machine steps run on this store's connections (tests: what a path
    /// costs, counted rather than timed).
    #[cfg(test)]
    pub(crate) vm_steps: Arc<std::sync::atomic::AtomicU64>,
    /// A smaller outbox line per client than the real one (tests reach it in a few writes).
    #[cfg(test)]
    pub(crate) test_waiting_cap: Mutex<Option<i64>>,
    /// The node's own check of each write (the printer addresses its network allows), run
    /// wherever a write is taken: at the hub, in a till's local commit, in a claim's adoption.
    write_check: std::sync::RwLock<Option<WriteCheck>>,
    _checkpointer: checkpoint::Checkpointer,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// A node's own check of one write, beyond the schema's: the reason it is refused (a 400).
pub type WriteCheck =
    Arc<dyn Fn(&capsule_protocol::Mutation) -> std::result::Result<(), String> + Send + Sync>;

impl Store {
    /// Sets the node's own check of every write this store takes from now on.
    pub fn set_write_check(&self, check: WriteCheck) {
        *self.write_check.write().unwrap_or_else(|e| e.into_inner()) = Some(check);
    }

    /// The schema's checks and the node's own, and the request in stored form: every path
    /// that takes a write (hub, a till's local commit, a claim's adoption) passes here.
    pub(crate) fn check_request(&self, batch: &mut capsule_protocol::MutationBatch) -> Result<()> {
        capsule_protocol::prepare_batch(&self.schema, batch)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let check = self
            .write_check
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(check) = check {
            for m in &batch.mutations {
                check(m).map_err(StoreError::Invalid)?;
            }
        }
        Ok(())
    }
}

/// How hard a commit holds on to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The hub: the only copy of the truth. Every commit is fsynced (synchronous=FULL), so a
    /// committed sale survives a power cut, not only a crash.
    Full,
    /// A till's replica: merges fsync at checkpoints only (synchronous=NORMAL in WAL). A power
    /// cut may lose the last merges, only ever a suffix of them, never corrupt the file; the
    /// till commits its stream position after the data it covers, so the position never runs
    /// ahead and the till simply pulls the rest again. Its own writes (the outbox) are the
    /// only copy until the hub has them, so they commit with a full fsync.
    Replica,
}

/// Bytes this process has written to its stores' WAL files through the store's WAL VFS (whole
/// pages with their frame headers): what the commits logged before their fsyncs.
pub fn wal_bytes_written() -> u64 {
    walvfs::bytes_out()
}

/// Opens a connection configured exactly as a store's writer is (for measuring the floor).
pub fn configured_connection(path: &Path, durability: Durability) -> Result<Connection> {
    let conn = open_writer(path)?;
    configure(&conn, durability)?;
    Ok(conn)
}

/// The same, but writing through SQLite's own VFS: the baseline for measuring the WAL VFS.
pub fn configured_connection_sqlite_vfs(path: &Path, durability: Durability) -> Result<Connection> {
    let conn = Connection::open(path)?;
    configure(&conn, durability)?;
    Ok(conn)
}

pub use rusqlite;

/// Opens a connection that writes through the WAL VFS (one write per transaction's frames),
/// or SQLite's own VFS where that cannot be registered.
fn open_writer(path: &Path) -> Result<Connection> {
    match walvfs::register() {
        Ok(vfs) => Ok(Connection::open_with_flags_and_vfs(
            path,
            rusqlite::OpenFlags::default(),
            vfs,
        )?),
        Err(why) => {
            tracing::warn!(%why, "SQLite's own VFS writes the WAL");
            Ok(Connection::open(path)?)
        }
    }
}

fn configure(conn: &Connection, durability: Durability) -> Result<()> {
    // WAL lets readers (pulls, snapshots) proceed while the writer commits.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Replica => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Every statement the pipeline, derivation and reads use stays prepared (rusqlite keeps
    // 16 by default, fewer than one write uses, so each write re-parsed its SQL).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// The layout of the store's file this build writes, kept in SQLite's `user_version`. Raise it
/// with a change an older build would misread (say, a table it relies on no longer written):
/// a build refuses a store of a newer format rather than guess (builds before this one did not
/// look, so a change must still be safe for them, or wait until they are gone).
pub const STORE_FORMAT: i64 = 1;

/// Refuses a store a newer build wrote, read through a read-only connection before anything
/// opens it for writing (which switches it to WAL and bumps its change counter): a refused
/// file stays exactly as it was.
fn refuse_newer_format(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let ro = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let format: i64 = ro.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if format > STORE_FORMAT {
        return Err(StoreError::Storage(format!(
            "{} was written by a newer Capsule POS (store format {format}; this build reads up to {STORE_FORMAT}): run that version or a later one, or restore a backup this version made",
            path.display()
        )));
    }
    Ok(())
}

/// The writer connection's page cache, as SQLite's `cache_size` (negative: KiB).
const WRITER_CACHE_KIB: i64 = -32 * 1024;

/// Prepared statements kept per connection: more than the distinct SQL the store issues.
const STATEMENT_CACHE: usize = 512;

impl Store {
    /// Opens (creating if needed) the database at `path`, creates or extends the tables the
    /// schema declares, and makes a node id on first open.
    pub fn open(path: impl AsRef<Path>, schema: Arc<Schema>) -> Result<Store> {
        Store::open_with(path, schema, Durability::Full)
    }

    /// Opens with the durability of the node's role.
    pub fn open_with(
        path: impl AsRef<Path>,
        schema: Arc<Schema>,
        durability: Durability,
    ) -> Result<Store> {
        derive::check_schema(&schema).map_err(StoreError::Invalid)?;
        let path = path.as_ref().to_path_buf();
        refuse_newer_format(&path)?;
        let mut conn = open_writer(&path)?;
        configure(&conn, durability).map_err(|e| {
            StoreError::Storage(format!(
                "{} cannot be opened for writing: {e}",
                path.display()
            ))
        })?;
        // Before any DDL: a newer build's file is left exactly as it is.
        let format: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if format > STORE_FORMAT {
            return Err(StoreError::Storage(format!(
                "{} was written by a newer Capsule POS (store format {format}; this build reads up to {STORE_FORMAT}): run that version or a later one, or restore a backup this version made",
                path.display()
            )));
        }
        let tx = conn.transaction()?;
        ddl::create_all(&tx, &schema)?;
        if format < STORE_FORMAT {
            tx.pragma_update(None, "user_version", STORE_FORMAT)?;
        }
        let existing: Option<String> = tx
            .query_row(
                "SELECT value FROM _meta WHERE key = ?1",
                [meta::NODE_ID],
                |r| r.get(0),
            )
            .optional()?;
        let node_id = match existing {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                tx.execute(
                    "INSERT INTO _meta(key, value) VALUES (?1, ?2)",
                    params![meta::NODE_ID, id],
                )?;
                id
            }
        };
        tx.commit()?;
        // A file the node cannot write opens "fine" and fails every later write: find out now
        // and refuse to start, rather than report online and answer 500s.
        let unwritable = |e: String| {
            StoreError::Storage(format!(
                "{} cannot be written ({e}); check the file's and its folder's permissions and owner",
                path.display()
            ))
        };
        if conn
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(|e| unwritable(e.to_string()))?
        {
            return Err(unwritable("opened read-only".into()));
        }
        conn.execute(
            "INSERT INTO _meta(key, value) VALUES ('opened_at', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [capsule_protocol::now_rfc3339()],
        )
        .map_err(|e| unwritable(e.to_string()))?;
        // The writer's pages stay in memory (SQLite's default keeps 2 MiB): a write's random
        // keys (mids, ids) otherwise re-read index pages from the OS at every commit.
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        // Checkpoints run on their own thread; the writer only as a backstop.
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            checkpoint::WRITER_BACKSTOP_PAGES,
        )?;
        let checkpointer = checkpoint::Checkpointer::start(&path)?;
        #[cfg(test)]
        let vm_steps = Arc::new(std::sync::atomic::AtomicU64::new(0));
        #[cfg(test)]
        count_steps(&conn, &vm_steps);
        Ok(Store {
            #[cfg(test)]
            vm_steps,
            #[cfg(test)]
            test_waiting_cap: Mutex::new(None),
            _checkpointer: checkpointer,
            schema,
            path,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            node_id,
            durability,
            authority: std::sync::atomic::AtomicBool::new(true),
            keeps_journal: std::sync::atomic::AtomicBool::new(false),
            lease: Mutex::new(None),
            clock: handover::system_clock(),
            fail_next_claim: std::sync::atomic::AtomicBool::new(false),
            write_check: std::sync::RwLock::new(None),
        })
    }

    /// The same store reading time from `clock` (a simulation's virtual time) for its lease.
    pub fn with_clock(mut self, clock: handover::Clock) -> Store {
        self.clock = clock;
        self
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This node's stable id (kept in the database).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (the transaction rolls back
        // on drop), so a poisoned lock is safe to reuse.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a pooled read-only connection.
    fn with_reader<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                #[cfg(test)]
                count_steps(&c, &self.vm_steps);
                c
            }
        };
        let out = f(&mut conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READ_POOL_SIZE {
            pool.push(conn);
        }
        out
    }

    /// Reads an integer from `_meta` (0 when unset).
    pub fn meta_i64(&self, key: &str) -> Result<i64> {
        self.with_reader(|c| sql::meta_i64(c, key))
    }

    pub fn meta_text(&self, key: &str) -> Result<Option<String>> {
        self.with_reader(|c| sql::meta_text(c, key))
    }

    /// Writes a consistent single-file copy of the database to `dest` while the node runs.
    pub fn backup_to(&self, dest: &Path) -> Result<u64> {
        backup_file(&self.path, dest)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let conn = self.writer();
        sql::set_meta(&conn, key, value)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub fn open_temp() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(dir.path().join("node.sqlite3"), Arc::new(Schema::builtin())).unwrap();
        (dir, store)
    }
}
