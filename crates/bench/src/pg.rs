//! PostgreSQL as the peer for durable writes: a throwaway cluster from Debian's `postgresql`
//! package in a temporary directory, driven by `pgbench`. Stopped (and deleted) on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context;

pub struct Pg {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    script: PathBuf,
    /// The rows one hub write leaves behind, written by one server-side function call.
    hub_rows_script: PathBuf,
    /// Run the server and tools as this user (PostgreSQL refuses to run as root).
    user: Option<String>,
    pub version: String,
    _dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/N/bin` holding `pgbench`.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install Debian's postgresql package")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pgbench").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .context("no pgbench under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Pg {
    fn command(&self, tool: &str) -> Command {
        tool_command(&self.bin, self.user.as_deref(), tool)
    }

    pub async fn start() -> anyhow::Result<Pg> {
        let bin = find_bin_dir()?;
        tokio::task::spawn_blocking(move || Pg::start_blocking(bin)).await?
    }

    fn start_blocking(bin: PathBuf) -> anyhow::Result<Pg> {
        let dir = tempfile::Builder::new().prefix("capsule-pg-").tempdir()?;
        let user = is_root().then(|| "postgres".to_string());
        if let Some(u) = &user {
            run(Command::new("chown").arg("-R").arg(u).arg(dir.path()))
                .context("give the temporary directory to the postgres user")?;
        }
        let data = dir.path().join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        run(tool_command(&bin, user.as_deref(), "initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "bench",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data))
        .context("initdb")?;
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{}' -c synchronous_commit=on -c fsync=on -c max_connections=100",
            dir.path().display()
        );
        run(tool_command(&bin, user.as_deref(), "pg_ctl")
            .args(["-w", "-l"])
            .arg(dir.path().join("server.log"))
            .args(["-o", &opts, "-D"])
            .arg(&data)
            .arg("start"))
        .context("pg_ctl start")?;
        let script = dir.path().join("insert.sql");
        std::fs::write(
            &script,
            "INSERT INTO bench_order(mid, table_label) VALUES (gen_random_uuid(), 'T1');\n",
        )?;
        let hub_rows_script = dir.path().join("hub_rows.sql");
        std::fs::write(
            &hub_rows_script,
            "SELECT hub_write(gen_random_uuid()::text, gen_random_uuid()::text, 'writer-' || :client_id);\n",
        )?;
        let mut pg = Pg {
            bin,
            data,
            port,
            script,
            hub_rows_script,
            user,
            version: String::new(),
            _dir: dir,
        };
        let out = run(pg.psql().args([
            "-c",
            "CREATE TABLE bench_order(id bigserial PRIMARY KEY, mid uuid NOT NULL UNIQUE, table_label text, opened_at timestamptz NOT NULL DEFAULT now())",
            "-c",
            HUB_ROWS_DDL,
            "-c",
            "SHOW server_version",
        ]))?;
        pg.version = format!(
            "PostgreSQL {}",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or("?")
        );
        Ok(pg)
    }

    fn psql(&self) -> Command {
        let mut c = self.command("psql");
        c.args([
            "-X",
            "-q",
            "-t",
            "-h",
            "127.0.0.1",
            "-U",
            "bench",
            "-d",
            "postgres",
        ])
        .arg("-p")
        .arg(self.port.to_string());
        c
    }

    /// `clients` pgbench clients inserting one row each for `secs`.
    pub async fn insert_tps(&self, clients: usize, secs: u64) -> anyhow::Result<PgRun> {
        self.tps(&self.script, clients, secs).await
    }

    /// `clients` pgbench clients each writing, per transaction, the rows one hub write of a
    /// new order leaves in the hub's store (see [`HUB_ROWS_DDL`]).
    pub async fn hub_rows_tps(&self, clients: usize, secs: u64) -> anyhow::Result<PgRun> {
        self.tps(&self.hub_rows_script, clients, secs).await
    }

    /// Where PostgreSQL's write-ahead log has been written up to, in bytes from its start.
    async fn wal_position(&self) -> anyhow::Result<f64> {
        let mut c = self.psql();
        c.args(["-c", "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"]);
        let out = tokio::task::spawn_blocking(move || run(&mut c)).await??;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse::<f64>()
            .with_context(|| format!("no WAL position in psql's output: {text}"))
    }

    async fn tps(&self, script: &Path, clients: usize, secs: u64) -> anyhow::Result<PgRun> {
        let wal_before = self.wal_position().await?;
        let mut c = self.command("pgbench");
        c.args(["-n", "-h", "127.0.0.1", "-U", "bench"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(clients.to_string())
            .arg("-j")
            .arg(clients.min(2).to_string())
            .arg("-T")
            .arg(secs.to_string())
            .arg("-f")
            .arg(script)
            .arg("postgres");
        let out = tokio::task::spawn_blocking(move || run(&mut c)).await??;
        let wal = self.wal_position().await? - wal_before;
        let text = String::from_utf8_lossy(&out.stdout);
        let number = |prefix: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(prefix)?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        };
        let tps =
            number("tps = ").with_context(|| format!("no tps in pgbench's output: {text}"))?;
        let transactions = number("number of transactions actually processed: ")
            .with_context(|| format!("no transaction count in pgbench's output: {text}"))?;
        Ok(PgRun {
            tps,
            wal_bytes_per_transaction: wal / transactions.max(1.0),
        })
    }
}

/// One pgbench run.
#[derive(Debug, Clone, Copy)]
pub struct PgRun {
    pub tps: f64,
    /// Write-ahead log written over the run per transaction (PostgreSQL logs row changes, with
    /// a whole page only at its first change after a checkpoint).
    pub wal_bytes_per_transaction: f64,
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

/// The hub's tables one write of a new order touches, in PostgreSQL, and a function that
/// writes what such a write leaves behind (one round trip, as SQLite is in-process at the hub):
/// the order row with its derived totals and part versions (the same columns and indexes), the
/// mutation id that makes a retry harmless, the journal entry a failover replays, which source
/// wrote the part, the order's share of its shift, the shift's running totals (one row every
/// write moves: in PostgreSQL each transaction holds its lock until its commit is on disk) and
/// two capsules in the stream log. Versions, order numbers and stream positions come from
/// sequences (no lock). The hub does more than this (reads for validation and derivation,
/// 50 subscribers fed); this is the rows, not the work.
pub const HUB_ROWS_DDL: &str = "
CREATE SEQUENCE version_seq; CREATE SEQUENCE order_no_seq; CREATE SEQUENCE capsule_seq;
CREATE TABLE order_header (id text PRIMARY KEY, order_no bigint, provisional_no text, shift_id text,
  node_id text, table_label text, order_type text, guests bigint, note text, opened_by text,
  opened_at text, currency text, status text, updated_at text, closed_at text, finished_v bigint,
  tax_rate_bp bigint, service_rate_bp bigint, order_discount bigint, subtotal bigint,
  discount_total bigint, service_total bigint, tax_total bigint, total bigint, paid_total bigint,
  balance_due bigint, item_count bigint, _v bigint NOT NULL DEFAULT 0,
  _v_header bigint NOT NULL DEFAULT 0, _v_lines bigint NOT NULL DEFAULT 0,
  _v_payments bigint NOT NULL DEFAULT 0, _v_status bigint NOT NULL DEFAULT 0,
  _v_totals bigint NOT NULL DEFAULT 0);
CREATE INDEX ON order_header (order_no);
CREATE INDEX ON order_header (shift_id);
CREATE INDEX ON order_header (status) WHERE status IN ('open', 'sent');
CREATE TABLE mutation (mid text PRIMARY KEY, seq bigint NOT NULL, applied_at bigint NOT NULL);
CREATE TABLE journal (mid text PRIMARY KEY, v bigint NOT NULL, mutation text NOT NULL);
CREATE INDEX ON journal (v);
CREATE TABLE part_source (entity text, id text, part text, source text NOT NULL,
  PRIMARY KEY (entity, id, part));
CREATE TABLE shift_share (order_id text PRIMARY KEY, shift_id text NOT NULL,
  counted bigint NOT NULL, cash bigint NOT NULL, card bigint NOT NULL);
CREATE TABLE pos_shift (id text PRIMARY KEY, orders_count bigint NOT NULL DEFAULT 0,
  cash_sales bigint NOT NULL DEFAULT 0, card_sales bigint NOT NULL DEFAULT 0,
  total_sales bigint NOT NULL DEFAULT 0, expected_cash bigint NOT NULL DEFAULT 0,
  _v bigint NOT NULL DEFAULT 0, _v_totals bigint NOT NULL DEFAULT 0);
INSERT INTO pos_shift (id) VALUES ('shift-bench');
CREATE TABLE capsule_log (seq bigint PRIMARY KEY, entity text NOT NULL, id text NOT NULL,
  parts text NOT NULL, v bigint NOT NULL, ts bigint NOT NULL, source text NOT NULL,
  gone bigint NOT NULL DEFAULT 0);
CREATE FUNCTION hub_write(p_mid text, p_id text, p_source text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
  PERFORM 1 FROM mutation WHERE mid = p_mid;
  IF FOUND THEN RETURN 0; END IF;
  v := nextval('version_seq');
  INSERT INTO order_header (id, order_no, shift_id, table_label, order_type, guests, opened_at,
    status, tax_rate_bp, service_rate_bp, order_discount, subtotal, discount_total,
    service_total, tax_total, total, paid_total, balance_due, item_count,
    _v, _v_header, _v_lines, _v_payments, _v_status, _v_totals)
  VALUES (p_id, nextval('order_no_seq'), 'shift-bench', 'T1', 'dine_in', 1,
    '2026-11-25T12:00:00.000Z', 'open', 1500, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, v, v, v, v, v, v);
  INSERT INTO mutation (mid, seq, applied_at) VALUES (p_mid, v, 1796397265335);
  INSERT INTO journal (mid, v, mutation) VALUES (p_mid, v, format(
    '{\"mid\":\"%s\",\"table\":\"order_header\",\"action\":\"insert\",\"row\":{\"id\":\"%s\",\"opened_at\":\"2026-11-25T12:00:00.000Z\",\"shift_id\":\"shift-bench\",\"table_label\":\"T1\",\"tax_rate_bp\":1500}}',
    p_mid, p_id));
  INSERT INTO part_source (entity, id, part, source) VALUES ('order', p_id, 'status', p_source)
    ON CONFLICT (entity, id, part) DO UPDATE SET source = excluded.source;
  INSERT INTO shift_share (order_id, shift_id, counted, cash, card)
    VALUES (p_id, 'shift-bench', 1, 0, 0);
  UPDATE pos_shift SET orders_count = orders_count + 1, _v = v, _v_totals = v
    WHERE id = 'shift-bench';
  INSERT INTO capsule_log (seq, entity, id, parts, v, ts, source) VALUES
    (nextval('capsule_seq'), 'order', p_id, '[\"header\",\"lines\",\"payments\",\"status\",\"totals\"]', v, 1796397265335, p_source),
    (nextval('capsule_seq'), 'shift', 'shift-bench', '[\"totals\"]', v, 1796397265335, p_source);
  RETURN v;
END $$;
";

fn tool_command(bin: &Path, user: Option<&str>, tool: &str) -> Command {
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(bin.join(tool));
            c
        }
        None => Command::new(bin.join(tool)),
    }
}

fn run(c: &mut Command) -> anyhow::Result<Output> {
    let out = c.output().with_context(|| format!("run {c:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{c:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}
