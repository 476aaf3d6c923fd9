//! A thin VFS over SQLite's own (unix) one that hands a transaction's WAL frames to the kernel
//! in one write instead of two per page.
//!
//! SQLite writes each WAL frame as two `pwrite`s (a 24-byte header, then the page), so a hub
//! write touching 17 pages makes 34 system calls before its fsync (the bench's floor line
//! measures the difference, taking turns with SQLite's own VFS). Here frames appended to the
//! WAL are gathered in memory and written at once when the frame that commits a transaction
//! is complete (its
//! header carries the database size; every other frame's carries 0), so the frames are in the
//! file before SQLite syncs it and before it publishes them to readers in the wal-index,
//! whatever `synchronous` says. A write inside what the file already holds (SQLite rewriting a
//! spilled page or the checksums of a transaction) goes straight through, so nothing is left
//! gathered once a commit is out. Anything that could see the file's bytes or size first (a
//! read, a sync, a truncate, a size query, a file control, a close) writes out what is gathered
//! first. Every other call, and every other file, is SQLite's own.
//!
//! A transaction that spilled frames and rolled back leaves them gathered; they are dropped
//! when it gives up the WAL write lock (the database file's lock calls are watched for that),
//! so they never land on frames another connection writes next (SQLite's EXCLUSIVE locking
//! mode takes no such lock and would keep them; the store never uses it). A database without
//! power-safe overwrite (not SQLite's default) keeps SQLite's own WAL writes: SQLite pads its
//! commits with frames split around a sync, which this does not gather.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

/// The name connections open the store with.
pub(crate) const NAME: &CStr = c"capsule-wal";

/// At most this many bytes are gathered (a big transaction writes frames before its commit
/// frame): SQLite's unix VFS writes at most 128 KiB - 1 per call (it masks the length).
const GATHER_LIMIT: usize = 0x1ffff;

/// A WAL frame header's size; its bytes 4..8 are the database size in pages after a commit
/// frame and 0 in every other frame.
const FRAME_HEADER: usize = 24;

/// Gathered writes handed to the kernel, in all (a test's proof that the WAL is wrapped).
static WRITES_OUT: AtomicU64 = AtomicU64::new(0);
/// Bytes written to WAL files through this VFS, gathered or passed on (see [`bytes_out`]).
static BYTES_OUT: AtomicU64 = AtomicU64::new(0);

/// Bytes this process has written to the WAL files of the stores it opened (frames of whole
/// pages plus their headers): the log volume each commit puts on disk before its fsync.
pub(crate) fn bytes_out() -> u64 {
    BYTES_OUT.load(Ordering::Relaxed)
}

/// Kept after SQLite's own file object in the space SQLite allocates for each open file.
#[repr(C)]
struct Gather {
    /// This file's methods: SQLite's, with some wrapped. First: `ours` relies on it.
    methods: ffi::sqlite3_io_methods,
    real: *const ffi::sqlite3_io_methods,
    start: i64,
    bytes: Vec<u8>,
    /// The end of the furthest write of this WAL generation (the file's bytes past it are
    /// a former generation's).
    end: i64,
    /// Where the page of the commit frame whose header was just written goes.
    commit_page_at: Option<i64>,
    /// A WAL's database file and a database file's WAL, while both are open (null otherwise).
    peer: *mut Gather,
}

struct Registered {
    real_vfs: *mut ffi::sqlite3_vfs,
    /// Where [`Gather`] starts inside a file object.
    gather_at: usize,
}

// SAFETY: the pointers are to SQLite's static default VFS, which lives as long as the process.
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

static REGISTERED: OnceLock<Result<Registered, String>> = OnceLock::new();

/// Registers the VFS once (not as the default); the error says why it could not be.
pub(crate) fn register() -> Result<&'static CStr, String> {
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS or NULL; the copy we
            // register is leaked, so it lives as long as SQLite may use it.
            unsafe {
                let real = ffi::sqlite3_vfs_find(std::ptr::null());
                if real.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let real_size = (*real).szOsFile as usize;
                let gather_at = real_size.next_multiple_of(std::mem::align_of::<Gather>());
                let mut ours = *real;
                ours.szOsFile = c_int::try_from(gather_at + std::mem::size_of::<Gather>())
                    .map_err(|_| "file object too large".to_string())?;
                ours.zName = NAME.as_ptr();
                ours.pNext = std::ptr::null_mut();
                ours.xOpen = Some(open);
                let ours = Box::leak(Box::new(ours));
                let rc = ffi::sqlite3_vfs_register(ours, 0);
                if rc != ffi::SQLITE_OK {
                    return Err(format!("registering the WAL VFS failed (SQLite code {rc})"));
                }
                Ok(Registered {
                    real_vfs: real,
                    gather_at,
                })
            }
        })
        .as_ref()
        .map(|_| NAME)
        .map_err(Clone::clone)
}

fn registered() -> &'static Registered {
    match REGISTERED.get() {
        Some(Ok(r)) => r,
        // Files are only opened through the VFS after it registered.
        _ => unreachable!("WAL VFS used before it registered"),
    }
}

/// # Safety
/// `file` is a file object this VFS wrapped (a WAL, or a main database file).
unsafe fn gather<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Gather {
    unsafe {
        &mut *(file
            .cast::<u8>()
            .add(registered().gather_at)
            .cast::<Gather>())
    }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let reg = registered();
    // SAFETY: SQLite allocated `file` with our szOsFile bytes, enough for its own file
    // object followed by a Gather; the real VFS fills the first part.
    unsafe {
        let Some(real_open) = (*reg.real_vfs).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        let rc = real_open(reg.real_vfs, name, file, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*file).pMethods.is_null() {
            return rc;
        }
        let real = (*file).pMethods;
        let mut methods = *real;
        if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            // Only to learn when a write transaction ends (see `shm_lock`).
            methods.xShmLock = Some(shm_lock);
            methods.xClose = Some(close);
        } else if flags & ffi::SQLITE_OPEN_WAL != 0 && power_safe_overwrite(database_of(name)) {
            methods.xClose = Some(close);
            methods.xRead = Some(read);
            methods.xWrite = Some(write);
            methods.xTruncate = Some(truncate);
            methods.xSync = Some(sync);
            methods.xFileSize = Some(file_size);
            methods.xFileControl = Some(file_control);
        } else {
            return rc;
        }
        let at = file.cast::<u8>().add(reg.gather_at).cast::<Gather>();
        at.write(Gather {
            methods,
            real,
            start: 0,
            bytes: Vec::new(),
            end: 0,
            commit_page_at: None,
            peer: std::ptr::null_mut(),
        });
        (*file).pMethods = &(*at).methods;
        if flags & ffi::SQLITE_OPEN_WAL != 0 {
            let db = database_of(name);
            if !db.is_null() && ours(db) {
                let db = gather(db);
                db.peer = at;
                (*at).peer = db;
            }
        }
        rc
    }
}

/// Whether `file` is a database file this VFS opened (and so has a [`Gather`]): its methods
/// are then the table inside its own Gather (compared as addresses, nothing dereferenced).
///
/// # Safety
/// `file` is an open SQLite file object.
unsafe fn ours(file: *mut ffi::sqlite3_file) -> bool {
    // SAFETY: reads the file object's first field, which every open file has.
    let methods = unsafe { (*file).pMethods } as usize;
    methods == (file as usize).wrapping_add(registered().gather_at)
}

/// SQLite's own, then: when the WAL write lock (lock 0) is released, the write transaction
/// has ended. A committed one left nothing gathered; anything still gathered belongs to a
/// transaction that spilled frames and rolled back, and is dropped, so it can never land on
/// frames another connection writes next.
unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: a database file this VFS opened; its peer, when set, is its open WAL.
    unsafe {
        let db = gather(file);
        let rc = match (*db.real).xShmLock {
            Some(l) => l(file, offset, n, flags),
            None => ffi::SQLITE_IOERR_SHMLOCK,
        };
        // Whatever the unlock's result: SQLite treats the transaction as over either way.
        if offset == 0
            && flags == ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE
            && !db.peer.is_null()
        {
            let wal = &mut *db.peer;
            if !wal.bytes.is_empty() {
                wal.end = wal.end.min(wal.start);
                wal.bytes.clear();
            }
            wal.commit_page_at = None;
        }
        rc
    }
}

/// The open database file whose WAL is `wal_name`, or null.
///
/// # Safety
/// `wal_name` is null or the name SQLite passes when it opens a WAL file.
unsafe fn database_of(wal_name: *const c_char) -> *mut ffi::sqlite3_file {
    if wal_name.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: for a WAL file's name SQLite returns its database's open file object.
    unsafe { ffi::sqlite3_database_file_object(wal_name) }
}

/// Whether database file `db` declares power-safe overwrite, so SQLite never pads its WAL's
/// commits with frames split around a sync (which this VFS does not gather).
///
/// # Safety
/// `db` is null or an open SQLite file object.
unsafe fn power_safe_overwrite(db: *mut ffi::sqlite3_file) -> bool {
    // SAFETY: an open file object's methods table, when set, is SQLite's or ours (a copy).
    unsafe {
        if db.is_null() || (*db).pMethods.is_null() {
            return false;
        }
        match (*(*db).pMethods).xDeviceCharacteristics {
            Some(dc) => dc(db) & ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE != 0,
            None => false,
        }
    }
}

/// SQLite's own write of `amount` bytes at `offset`.
///
/// # Safety
/// `file` is a file this VFS wrapped and `buf` holds `amount` bytes.
unsafe fn real_write(
    file: *mut ffi::sqlite3_file,
    g: &Gather,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: the real xWrite is given SQLite's own file object and the caller's buffer.
    unsafe {
        match (*g.real).xWrite {
            Some(w) => w(file, buf, amount, offset),
            None => ffi::SQLITE_IOERR_WRITE,
        }
    }
}

/// Writes out what is gathered; it is dropped either way (a failed write fails the
/// transaction, whose frames SQLite then never publishes).
unsafe fn flush(file: *mut ffi::sqlite3_file, g: &mut Gather) -> c_int {
    if g.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Ok(len) = c_int::try_from(g.bytes.len()) else {
        g.bytes.clear();
        return ffi::SQLITE_IOERR_WRITE;
    };
    // SAFETY: a live buffer of `len` bytes.
    let rc = unsafe { real_write(file, g, g.bytes.as_ptr().cast(), len, g.start) };
    if rc == ffi::SQLITE_OK {
        BYTES_OUT.fetch_add(len as u64, Ordering::Relaxed);
    } else {
        // Those bytes are not in the file: writes there are appends again.
        g.end = g.end.min(g.start);
    }
    g.bytes.clear();
    WRITES_OUT.fetch_add(1, Ordering::Relaxed);
    rc
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes a buffer of `amount` bytes and a file this VFS opened as WAL.
    unsafe {
        let g = gather(file);
        let bytes = std::slice::from_raw_parts(buf.cast::<u8>(), amount.max(0) as usize);
        if offset == 0 {
            // The WAL header: a new generation starts writing from the top of the file.
            g.end = 0;
        }
        let appends = offset >= g.end;
        let new_end = offset + i64::from(amount);
        // The commit frame's page, however it arrives (decided before anything is flushed).
        let completes_commit = g.commit_page_at == Some(offset);
        g.commit_page_at = (bytes.len() == FRAME_HEADER && bytes[4..8] != [0; 4])
            .then_some(offset + FRAME_HEADER as i64);
        if !g.bytes.is_empty()
            && (!appends
                || offset != g.start + g.bytes.len() as i64
                || g.bytes.len() + bytes.len() > GATHER_LIMIT)
        {
            let rc = flush(file, g);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if !appends || bytes.len() > GATHER_LIMIT {
            // A rewrite inside what is written (pages larger than the limit never come from
            // SQLite): passed on as it came.
            let rc = real_write(file, g, buf, amount, offset);
            if rc == ffi::SQLITE_OK {
                g.end = g.end.max(new_end);
                BYTES_OUT.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
            return rc;
        }
        if g.bytes.is_empty() {
            g.start = offset;
        }
        g.bytes.extend_from_slice(bytes);
        g.end = g.end.max(new_end);
        if completes_commit {
            // Out before SQLite syncs or publishes it.
            return flush(file, g);
        }
        ffi::SQLITE_OK
    }
}

/// Writes out what is gathered, then calls SQLite's own method.
macro_rules! flushed_first {
    ($file:expr, $method:ident, $($arg:expr),*) => {{
        let g = gather($file);
        if flush($file, g) != ffi::SQLITE_OK {
            // Not the caller's own error (SQLITE_FULL from a read would roll back only a
            // statement): an I/O error makes SQLite roll the whole transaction back.
            return ffi::SQLITE_IOERR_WRITE;
        }
        match (*g.real).$method {
            Some(m) => m($file, $($arg),*),
            None => ffi::SQLITE_ERROR,
        }
    }};
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: a file this VFS opened as WAL; arguments passed on as SQLite gave them.
    unsafe { flushed_first!(file, xRead, buf, amount, offset) }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: as in `read`.
    unsafe { flushed_first!(file, xTruncate, size) }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as in `read`.
    unsafe { flushed_first!(file, xSync, flags) }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: as in `read`.
    unsafe { flushed_first!(file, xFileSize, size) }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: as in `read`.
    unsafe { flushed_first!(file, xFileControl, op, arg) }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: a file this VFS opened; its Gather is dropped exactly once, here, after which
    // SQLite never calls this file's methods again; its peer forgets it first.
    unsafe {
        let g = gather(file);
        let flushed = flush(file, g);
        if !g.peer.is_null() {
            (*g.peer).peer = std::ptr::null_mut();
        }
        let real = g.real;
        std::ptr::drop_in_place(g as *mut Gather);
        // SQLite's close looks at the file's methods no more than its other calls do, but give
        // it back its own table all the same.
        (*file).pMethods = real;
        let rc = match (*real).xClose {
            Some(c) => c(file),
            None => ffi::SQLITE_OK,
        };
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            rc
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rusqlite::{Connection, OpenFlags, ffi};

    fn open(path: &Path, synchronous: &str) -> Connection {
        let c = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::default(),
            super::register().unwrap(),
        )
        .unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "synchronous", synchronous).unwrap();
        c.execute_batch("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, note TEXT NOT NULL)")
            .unwrap();
        c
    }

    fn count_and_length(c: &Connection) -> (i64, i64) {
        c.query_row(
            "SELECT count(*), coalesce(sum(length(note)), 0) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    /// The files as a power cut right after the commit would leave them: the database and its
    /// WAL, opened elsewhere with SQLite's own VFS, which recovers from the WAL's checksums.
    fn as_after_a_power_cut(path: &Path, to: &Path) -> Connection {
        std::fs::copy(path, to).unwrap();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let mut to_wal = to.as_os_str().to_owned();
        to_wal.push("-wal");
        std::fs::copy(&wal, &to_wal).unwrap();
        Connection::open(to).unwrap()
    }

    #[test]
    fn commits_of_every_size_reach_the_file_before_readers_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let writer = open(&path, "NORMAL");
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let out_before = super::WRITES_OUT.load(std::sync::atomic::Ordering::Relaxed);
        let bytes_before = super::bytes_out();
        // A row of 3,900 bytes fills a page: commits of 1 to 70 pages, so a commit frame falls
        // at every place relative to the 128 KiB a gathered write may hold.
        let note = "p".repeat(3900);
        let (mut rows, mut bytes) = (0i64, 0i64);
        for pages in 1..=70 {
            writer.execute_batch("BEGIN").unwrap();
            for _ in 0..pages {
                writer
                    .execute("INSERT INTO t(note) VALUES (?1)", [&note])
                    .unwrap();
            }
            writer.execute_batch("COMMIT").unwrap();
            rows += pages;
            bytes += pages * 3900;
            assert_eq!(
                count_and_length(&reader),
                (rows, bytes),
                "after {pages} pages"
            );
            let copy = as_after_a_power_cut(&path, &dir.path().join(format!("copy{pages}.db")));
            assert_eq!(
                count_and_length(&copy),
                (rows, bytes),
                "copy after {pages} pages"
            );
        }
        let out = super::WRITES_OUT.load(std::sync::atomic::Ordering::Relaxed) - out_before;
        assert!(
            out >= 70,
            "the WAL is not gathered: {out} gathered writes for 70 commits"
        );
        // Other tests write WAL too, so at least: the 2,485 pages of the rows, each in a frame.
        let logged = super::bytes_out() - bytes_before;
        assert!(
            logged >= 2485 * (4096 + 24),
            "only {logged} WAL bytes counted for 2,485 pages"
        );
    }

    #[test]
    fn a_transaction_bigger_than_one_write_with_pages_rewritten_survives_whole() {
        // NORMAL too: without a sync at commit, SQLite's rewritten checksums (after it changed
        // a page it had spilled) must still be in the file when the commit is published.
        for synchronous in ["FULL", "NORMAL"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.db");
            let c = open(&path, synchronous);
            // A tiny page cache makes SQLite spill frames before the commit and rewrite pages
            // it already spilled, the WAL's writes inside what it has written.
            c.pragma_update(None, "cache_size", 8).unwrap();
            let note = "x".repeat(500);
            c.execute_batch("BEGIN").unwrap();
            for i in 0..3000 {
                c.execute("INSERT INTO t(id, note) VALUES (?1, ?2)", (i, &note))
                    .unwrap();
            }
            c.execute("UPDATE t SET note = note || 'y' WHERE id % 7 = 0", [])
                .unwrap();
            c.execute_batch("COMMIT").unwrap();
            // Copied before the writer reads again (a read writes out what is gathered).
            let copy = as_after_a_power_cut(&path, &dir.path().join("copy.db"));
            let expected = (3000, 3000 * 500 + 429);
            assert_eq!(count_and_length(&copy), expected, "{synchronous}");
            assert_eq!(count_and_length(&c), expected, "{synchronous}");
            let ok: String = copy
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(ok, "ok");
        }
    }

    #[test]
    fn frames_still_gathered_when_a_transaction_rolls_back_never_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        let c = open(&path, "FULL");
        // A reader inside a transaction keeps the WAL from being checkpointed away at close.
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        assert_eq!(count_and_length(&reader), (0, 0));
        let size_before = std::fs::metadata(&wal_path).unwrap().len();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        // What a transaction that spilled a frame and read nothing since leaves gathered
        // (hard to make SQLite do on cue): a frame header appended to the WAL, by hand.
        // SAFETY: the connection is open and in a write transaction; JOURNAL_POINTER gives
        // its WAL file object, whose write method is this VFS's.
        unsafe {
            let mut wal: *mut ffi::sqlite3_file = std::ptr::null_mut();
            let rc = ffi::sqlite3_file_control(
                c.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_JOURNAL_POINTER,
                (&raw mut wal).cast(),
            );
            assert_eq!(rc, ffi::SQLITE_OK);
            let header = [0xAB_u8; 24];
            let write = (*(*wal).pMethods).xWrite.unwrap();
            let at = i64::try_from(size_before).unwrap();
            assert_eq!(write(wal, header.as_ptr().cast(), 24, at), ffi::SQLITE_OK);
        }
        c.execute_batch("ROLLBACK").unwrap();
        // Closing writes out whatever is still gathered.
        drop(c);
        let wal = std::fs::read(&wal_path).unwrap();
        assert!(
            wal.len() as u64 >= size_before,
            "the WAL was checkpointed away"
        );
        assert!(
            !wal.windows(24).any(|w| w == [0xAB_u8; 24]),
            "a rolled-back transaction's gathered frame reached the WAL"
        );
    }

    #[test]
    fn every_commit_is_in_the_file_for_other_connections_even_without_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        // NORMAL: SQLite never syncs at commit, so nothing but the commit frame pushes the
        // gathered frames out before readers are told about them.
        let writer = open(&path, "NORMAL");
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        for i in 0..200 {
            writer
                .execute("INSERT INTO t(id, note) VALUES (?1, 'n')", [i])
                .unwrap();
            assert_eq!(count_and_length(&reader), (i + 1, i + 1));
        }
        writer
            .execute_batch("BEGIN; DELETE FROM t; ROLLBACK")
            .unwrap();
        assert_eq!(count_and_length(&reader), (200, 200));
        let copy = as_after_a_power_cut(&path, &dir.path().join("copy.db"));
        assert_eq!(count_and_length(&copy), (200, 200));
    }
}
