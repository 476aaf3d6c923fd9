//! This node's print jobs: a durable queue, so a printer that is off or out of paper never
//! blocks a till and a job waits until it can print. Not synced: a job belongs to the node
//! that sends it.
//!
//! A job's id names what it prints (a round's ticket for a station, an order's receipt, a
//! reprint request), so asking twice (a retried request) queues it once.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use capsule_protocol::now_ms;

use crate::{Result, Store};

pub(crate) const DDL: &str = "
CREATE TABLE IF NOT EXISTS _print_job (
    id TEXT PRIMARY KEY,
    printer_id TEXT NOT NULL,
    printer TEXT NOT NULL,
    address TEXT NOT NULL,
    kind TEXT NOT NULL,
    about TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL,
    error TEXT,
    bytes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS _print_job_due ON _print_job(state, next_at);
CREATE INDEX IF NOT EXISTS _print_job_printer ON _print_job(printer_id, state);
";

/// Jobs one printer may have waiting: a printer that is off for a day fills no disk; the next
/// job is refused with the reason until the printer takes some.
pub const MAX_WAITING_PER_PRINTER: i64 = 200;

/// A job not printed this long after it was queued is given up, with the reason shown.
pub const PRINT_JOB_EXPIRES_MS: i64 = 24 * 3600 * 1000;

/// What queueing a job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// A job with this id was queued or printed before (a retried request).
    Already,
    /// The printer has this many jobs waiting already: not queued.
    Full(i64),
}

/// A print job as the dashboard lists it (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrintJob {
    pub id: String,
    pub printer_id: String,
    pub printer: String,
    pub address: String,
    /// `receipt` or `kitchen`.
    pub kind: String,
    /// The order or round it prints.
    pub about: String,
    pub created_at: String,
    /// `pending` (waiting or retrying), `done`, or `expired` (not printed within a day; `error`
    /// says why).
    pub state: String,
    pub attempts: i64,
    pub error: Option<String>,
    pub bytes: usize,
}

/// The next job to send, or when one will be due.
pub enum PrintDue {
    /// Its id, the printer's id, the address it was queued for and the bytes.
    Job(String, String, String, Vec<u8>),
    /// Nothing due now; the next retry at this time (ms since epoch), if any.
    Later(Option<i64>),
}

/// A job to queue.
pub struct NewPrintJob<'a> {
    pub id: &'a str,
    pub printer_id: &'a str,
    pub printer: &'a str,
    pub address: &'a str,
    pub kind: &'a str,
    pub about: &'a str,
    pub bytes: &'a [u8],
}

impl Store {
    /// Queues a job, unless one with its id was queued before or its printer already has
    /// [`MAX_WAITING_PER_PRINTER`] jobs waiting.
    pub fn enqueue_print(&self, j: &NewPrintJob<'_>) -> Result<Enqueued> {
        let now = now_ms();
        let w = self.writer();
        // Printed and expired jobs are kept three days for the dashboard, then dropped.
        w.execute(
            "DELETE FROM _print_job WHERE state IN ('done', 'expired') AND created_at < ?1",
            [now - 3 * 24 * 3600 * 1000],
        )?;
        let known: bool = w
            .prepare_cached("SELECT 1 FROM _print_job WHERE id = ?1")?
            .exists([j.id])?;
        if known {
            return Ok(Enqueued::Already);
        }
        let waiting: i64 = w
            .prepare_cached(
                "SELECT COUNT(*) FROM _print_job WHERE printer_id = ?1 AND state = 'pending'",
            )?
            .query_row([j.printer_id], |r| r.get(0))?;
        if waiting >= MAX_WAITING_PER_PRINTER {
            return Ok(Enqueued::Full(waiting));
        }
        let n = w.execute(
            "INSERT OR IGNORE INTO _print_job(id, printer_id, printer, address, kind, about, created_at, next_at, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
            params![j.id, j.printer_id, j.printer, j.address, j.kind, j.about, now, j.bytes],
        )?;
        Ok(if n == 1 {
            Enqueued::Queued
        } else {
            Enqueued::Already
        })
    }

    /// Gives up the jobs still waiting [`PRINT_JOB_EXPIRES_MS`] after they were queued (as of
    /// `now_ms`), keeping the printer's last error in the reason; returns how many.
    pub fn expire_print_jobs(&self, now_ms: i64) -> Result<usize> {
        Ok(self.writer().execute(
            "UPDATE _print_job SET state = 'expired',
                 error = 'not printed within a day, given up: ' || COALESCE(error, 'the printer never answered')
             WHERE state = 'pending' AND created_at < ?1",
            [now_ms - PRINT_JOB_EXPIRES_MS],
        )?)
    }

    /// The latest jobs, newest first.
    pub fn print_jobs(&self, limit: usize) -> Result<Vec<PrintJob>> {
        self.with_reader(|c| {
            let mut s = c.prepare_cached(
                "SELECT id, printer_id, printer, address, kind, about, created_at, state, attempts, error, length(bytes)
                 FROM _print_job ORDER BY created_at DESC, id LIMIT ?1",
            )?;
            let rows = s.query_map([limit as i64], |r| {
                Ok(PrintJob {
                    id: r.get(0)?,
                    printer_id: r.get(1)?,
                    printer: r.get(2)?,
                    address: r.get(3)?,
                    kind: r.get(4)?,
                    about: r.get(5)?,
                    created_at: capsule_protocol::ms_to_rfc3339(r.get(6)?),
                    state: r.get(7)?,
                    attempts: r.get(8)?,
                    error: r.get(9)?,
                    bytes: r.get::<_, i64>(10)? as usize,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The oldest pending job that is due (its id, address and bytes), or when the next one
    /// will be (ms since epoch).
    pub fn due_print_job(&self) -> Result<PrintDue> {
        self.with_reader(|c| {
            let now = now_ms();
            let due = c
                .query_row(
                    "SELECT id, printer_id, address, bytes FROM _print_job
                     WHERE state = 'pending' AND next_at <= ?1 ORDER BY created_at, id LIMIT 1",
                    [now],
                    |r| Ok(PrintDue::Job(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            if let Some(job) = due {
                return Ok(job);
            }
            let next: Option<i64> = c.query_row(
                "SELECT MIN(next_at) FROM _print_job WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )?;
            Ok(PrintDue::Later(next))
        })
    }

    /// The printer took every byte.
    pub fn print_done(&self, id: &str) -> Result<()> {
        self.writer().execute(
            "UPDATE _print_job SET state = 'done', attempts = attempts + 1, error = NULL WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// The printer could not be reached or stopped taking bytes: try again after `retry_ms`,
    /// and leave that printer's other jobs waiting as long, so one dead printer never keeps
    /// the others' jobs (a receipt, a drawer kick) from their turn.
    pub fn print_failed(&self, id: &str, error: &str, retry_ms: i64) -> Result<()> {
        let w = self.writer();
        let next = now_ms() + retry_ms;
        w.execute(
            "UPDATE _print_job SET attempts = attempts + 1, error = ?2, next_at = ?3 WHERE id = ?1",
            params![id, error, next],
        )?;
        w.execute(
            "UPDATE _print_job SET next_at = MAX(next_at, ?2)
             WHERE state = 'pending' AND printer_id = (SELECT printer_id FROM _print_job WHERE id = ?1)",
            params![id, next],
        )?;
        Ok(())
    }

    /// Tries a waiting or given-up job again now (the cashier's Retry): `false` when there is
    /// no such job or it has printed. It keeps its id, so it prints once however often it is
    /// retried.
    pub fn print_retry_now(&self, id: &str) -> Result<bool> {
        let n = self.writer().execute(
            // A job given up gets a new day to print in.
            "UPDATE _print_job SET next_at = ?2,
                 created_at = CASE WHEN state = 'expired' THEN ?2 ELSE created_at END,
                 state = 'pending'
             WHERE id = ?1 AND state IN ('pending', 'expired')",
            params![id, now_ms()],
        )?;
        Ok(n == 1)
    }

    /// How many times a job has been tried (0 for a new one): the sender's backoff.
    pub fn print_attempts(&self, id: &str) -> Result<i64> {
        self.with_reader(|c| {
            Ok(
                c.query_row("SELECT attempts FROM _print_job WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?
                .unwrap_or(0),
            )
        })
    }
}
