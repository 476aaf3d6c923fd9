//! Backups of a node's database: the `tilld backup` command and the hub's scheduled copies.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capsule_protocol::BackupStatus;
use capsule_store::Store;

/// Where and how often the hub copies its database, and how many copies it keeps.
#[derive(Debug, Clone)]
pub struct BackupSchedule {
    pub dir: PathBuf,
    pub every: Duration,
    pub keep: usize,
}

/// Shared backup state, read by the status handler.
pub type SharedBackupState = Arc<Mutex<BackupStatus>>;

/// Backup file names sort by the time they were taken.
const PREFIX: &str = "capsule-";
const SUFFIX: &str = ".sqlite3";

/// Parses `90s`, `30m`, `1h`, `2d` (at least one minute apart, so a typo cannot make the hub
/// copy itself all day).
pub fn parse_every(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 30m, 1h or 1d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("'{s}' is not a duration like 30m, 1h or 1d")),
    };
    if secs < 60 {
        return Err(format!("'{s}' is shorter than a minute"));
    }
    Ok(Duration::from_secs(secs))
}

/// Copies `store` into `dir` under a time-stamped name and keeps the newest `keep` copies.
pub fn backup_now(store: &Store, dir: &Path, keep: usize) -> capsule_store::Result<(PathBuf, u64)> {
    std::fs::create_dir_all(dir).map_err(|e| {
        capsule_store::StoreError::Storage(format!("cannot create {}: {e}", dir.display()))
    })?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    let dest = dir.join(format!("{PREFIX}{stamp}{SUFFIX}"));
    let bytes = store.backup_to(&dest)?;
    let mut copies = list(dir);
    while copies.len() > keep.max(1) {
        let oldest = copies.remove(0);
        if let Err(e) = std::fs::remove_file(&oldest) {
            tracing::warn!(file = %oldest.display(), error = %e, "cannot remove an old backup");
        }
    }
    Ok((dest, bytes))
}

/// Backup files in `dir`, oldest first.
fn list(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
        })
        .collect();
    out.sort();
    out
}

/// Runs the schedule: a first copy at start, then one every `every`.
pub async fn run_schedule(store: Arc<Store>, schedule: BackupSchedule, state: SharedBackupState) {
    let mut tick = tokio::time::interval(schedule.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (s, dir, keep) = (store.clone(), schedule.dir.clone(), schedule.keep);
        let result = tokio::task::spawn_blocking(move || backup_now(&s, &dir, keep)).await;
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(Ok((file, bytes))) => {
                tracing::info!(file = %file.display(), bytes, "backup written");
                st.last_file = Some(file.display().to_string());
                st.last_bytes = Some(bytes);
                st.last_at = Some(capsule_protocol::now_rfc3339());
                st.last_error = None;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "backup failed");
                st.last_error = Some(e.to_string());
            }
            Err(e) => st.last_error = Some(format!("backup task failed: {e}")),
        }
        st.count = list(&schedule.dir).len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_every("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_every("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_every("2d").unwrap(), Duration::from_secs(172_800));
        assert!(
            parse_every("5s")
                .unwrap_err()
                .contains("shorter than a minute")
        );
        assert!(parse_every("1 hour").is_err());
        assert!(parse_every("h").is_err());
    }

    #[test]
    fn the_newest_copies_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path().join("node.sqlite3"),
            Arc::new(capsule_protocol::Schema::builtin()),
        )
        .unwrap();
        let backups = dir.path().join("backups");
        let mut made = Vec::new();
        for _ in 0..4 {
            made.push(backup_now(&store, &backups, 2).unwrap().0);
        }
        assert_eq!(list(&backups), made[2..].to_vec());
    }
}
