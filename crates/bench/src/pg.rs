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
        let mut pg = Pg {
            bin,
            data,
            port,
            script,
            user,
            version: String::new(),
            _dir: dir,
        };
        let out = run(pg.psql().args([
            "-c",
            "CREATE TABLE bench_order(id bigserial PRIMARY KEY, mid uuid NOT NULL UNIQUE, table_label text, opened_at timestamptz NOT NULL DEFAULT now())",
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

    /// Transactions per second of `clients` pgbench clients inserting for `secs`.
    pub async fn insert_tps(&self, clients: usize, secs: u64) -> anyhow::Result<f64> {
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
            .arg(&self.script)
            .arg("postgres");
        let out = tokio::task::spawn_blocking(move || run(&mut c)).await??;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                l.strip_prefix("tps = ")?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .with_context(|| format!("no tps in pgbench's output: {text}"))
    }
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
