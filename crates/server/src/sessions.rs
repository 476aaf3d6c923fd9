//! Browsers paired with a node (a kitchen TV, a manager's laptop): each holds a random token in
//! an HttpOnly cookie; the node keeps only the token's SHA-256, with the role the manager gave
//! it, in `screens.json` in its data directory (mode 0600), so a restart keeps them and a copy
//! of the file lets no one in. Asking to pair is public and bounded; approving is a manager's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The cookie a paired browser keeps its token in.
pub const SCREEN_COOKIE: &str = "capsule_screen";
/// How long a browser's request waits for a manager.
pub const ASK_VALID: Duration = Duration::from_secs(180);
/// Requests waiting at once: more are refused (a guest cannot fill the manager's list).
pub const MAX_WAITING: usize = 8;
/// Requests waiting at once from one address: a guest's script fills two places, not the
/// list, and the kitchen TV that asks next still gets its code.
pub const MAX_WAITING_PER_ADDRESS: usize = 2;

/// What a paired browser may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScreenRole {
    /// A kitchen screen: follows the shop's data and bumps kitchen work.
    Kitchen,
    /// A manager's browser: what the manager's PC may do.
    Manager,
}

/// A paired browser, as the node keeps it (never the token).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Screen {
    /// The first 12 hex digits of the token's hash: how the dashboard names it.
    pub id: String,
    pub name: String,
    pub role: ScreenRole,
    pub paired_at: String,
    hash: String,
}

/// A browser's request to pair, waiting for a manager.
#[derive(Debug, Clone)]
struct Asking {
    code: String,
    name: String,
    role: ScreenRole,
    poll_hash: String,
    asked: Instant,
    from: std::net::IpAddr,
    /// Set by the manager's approval: the token, handed out once on the browser's next poll.
    approved: Option<String>,
}

/// A request as the dashboard lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Waiting {
    pub id: String,
    pub code: String,
    pub name: String,
    pub role: ScreenRole,
    pub waiting_s: u64,
}

/// What a browser's poll finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    Waiting,
    /// Approved: the token to set as its cookie (once).
    Paired(String),
    /// Refused, expired, or never asked.
    Gone,
}

#[derive(Default)]
struct State {
    screens: Vec<Screen>,
    asking: HashMap<String, Asking>,
    /// By token hash: what ends a paired browser's open `/ws` the moment it is removed.
    closers: HashMap<String, tokio::sync::watch::Sender<bool>>,
}

/// The node's paired browsers. Cheap to clone.
#[derive(Clone)]
pub struct Screens {
    state: Arc<Mutex<State>>,
    file: Option<PathBuf>,
}

impl std::fmt::Debug for Screens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Screens").finish_non_exhaustive()
    }
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `bytes` random bytes as hex: tokens, secrets, ids.
pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Screens {
    /// The browsers paired with the node whose data directory is `dir` (none yet: empty).
    pub fn load(dir: Option<PathBuf>) -> Screens {
        let file = dir.map(|d| d.join("screens.json"));
        let screens = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Screens {
            state: Arc::new(Mutex::new(State {
                screens,
                ..State::default()
            })),
            file,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, screens: &[Screen]) -> std::io::Result<()> {
        match &self.file {
            Some(file) => capsule_trust::write_private(file, &serde_json::to_vec_pretty(screens)?),
            None => Ok(()),
        }
    }

    /// The role of the browser holding `token`, if it is paired.
    pub fn role_of(&self, token: &str) -> Option<ScreenRole> {
        let h = hash(token);
        self.lock()
            .screens
            .iter()
            .find(|s| s.hash == h)
            .map(|s| s.role)
    }

    /// A browser at `from` asks to pair: its request id, the code it shows, and the secret it
    /// polls with. None when too many wait already, in all or from that address.
    pub fn ask(
        &self,
        name: &str,
        role: ScreenRole,
        from: std::net::IpAddr,
    ) -> Option<(String, String, String)> {
        let mut s = self.lock();
        s.asking.retain(|_, a| a.asked.elapsed() < ASK_VALID);
        let from = from.to_canonical();
        let here = s.asking.values().filter(|a| a.from == from).count();
        if s.asking.len() >= MAX_WAITING || here >= MAX_WAITING_PER_ADDRESS {
            return None;
        }
        let id = random_hex(8);
        let code = format!("{:06}", rand::random_range(0..1_000_000u32));
        let poll = random_hex(32);
        s.asking.insert(
            id.clone(),
            Asking {
                code: code.clone(),
                name: name.to_string(),
                role,
                poll_hash: hash(&poll),
                asked: Instant::now(),
                from,
                approved: None,
            },
        );
        Some((id, code, poll))
    }

    /// A browser polls its request with its secret.
    pub fn poll(&self, id: &str, poll: &str) -> Poll {
        let mut s = self.lock();
        let Some(a) = s.asking.get(id) else {
            return Poll::Gone;
        };
        if a.poll_hash != hash(poll) {
            return Poll::Gone;
        }
        if a.asked.elapsed() >= ASK_VALID {
            s.asking.remove(id);
            return Poll::Gone;
        }
        match a.approved.clone() {
            Some(token) => {
                s.asking.remove(id);
                Poll::Paired(token)
            }
            None => Poll::Waiting,
        }
    }

    /// Requests waiting for a manager.
    pub fn waiting(&self) -> Vec<Waiting> {
        let mut s = self.lock();
        s.asking.retain(|_, a| a.asked.elapsed() < ASK_VALID);
        let mut out: Vec<Waiting> = s
            .asking
            .iter()
            .filter(|(_, a)| a.approved.is_none())
            .map(|(id, a)| Waiting {
                id: id.clone(),
                code: a.code.clone(),
                name: a.name.clone(),
                role: a.role,
                waiting_s: a.asked.elapsed().as_secs(),
            })
            .collect();
        out.sort_by_key(|w| w.waiting_s);
        out
    }

    /// The manager approves request `id`: the browser is paired from its next poll.
    pub fn approve(&self, id: &str, now: &str) -> std::io::Result<bool> {
        let mut s = self.lock();
        let Some(a) = s.asking.get_mut(id).filter(|a| a.approved.is_none()) else {
            return Ok(false);
        };
        let token = random_hex(32);
        let h = hash(&token);
        let screen = Screen {
            id: h[..12].to_string(),
            name: a.name.clone(),
            role: a.role,
            paired_at: now.to_string(),
            hash: h,
        };
        a.approved = Some(token);
        s.screens.push(screen);
        let screens = s.screens.clone();
        drop(s);
        self.save(&screens)?;
        Ok(true)
    }

    /// The manager refuses request `id`.
    pub fn deny(&self, id: &str) -> bool {
        self.lock().asking.remove(id).is_some()
    }

    /// Paired browsers, for the dashboard.
    pub fn list(&self) -> Vec<Screen> {
        self.lock().screens.clone()
    }

    /// What tells the connection of the browser holding `token` to end (it is removed); None
    /// when the token pairs no browser.
    pub fn closer(&self, token: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        let h = hash(token);
        let mut s = self.lock();
        if !s.screens.iter().any(|x| x.hash == h) {
            return None;
        }
        // Forget browsers whose connections all ended.
        s.closers.retain(|_, tx| tx.receiver_count() > 0);
        Some(
            s.closers
                .entry(h)
                .or_insert_with(|| tokio::sync::watch::channel(false).0)
                .subscribe(),
        )
    }

    /// Unpairs the browser named `id`: its cookie opens nothing from now on, and its open
    /// `/ws` ends at once. On disk first: a removal the file did not take is not made (it
    /// would come back at the next start).
    pub fn remove(&self, id: &str) -> std::io::Result<bool> {
        let mut s = self.lock();
        let Some(gone) = s.screens.iter().find(|x| x.id == id).cloned() else {
            return Ok(false);
        };
        let kept: Vec<Screen> = s.screens.iter().filter(|x| x.id != id).cloned().collect();
        self.save(&kept)?;
        s.screens = kept;
        if let Some(tx) = s.closers.remove(&gone.hash) {
            let _ = tx.send(true);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_is_paired_once_approved_and_holds_what_only_its_cookie_opens() {
        let dir = tempfile::tempdir().unwrap();
        let screens = Screens::load(Some(dir.path().to_path_buf()));
        let (id, code, poll) = screens
            .ask("Kitchen TV", ScreenRole::Kitchen, guest(1))
            .unwrap();
        assert_eq!(code.len(), 6);
        assert_eq!(screens.poll(&id, &poll), Poll::Waiting);
        assert_eq!(screens.poll(&id, "not the secret"), Poll::Gone);
        assert_eq!(screens.waiting().len(), 1);
        assert!(screens.approve(&id, "2026-12-07T12:00:00Z").unwrap());
        let Poll::Paired(token) = screens.poll(&id, &poll) else {
            panic!("approved")
        };
        // Handed out once.
        assert_eq!(screens.poll(&id, &poll), Poll::Gone);
        assert_eq!(screens.role_of(&token), Some(ScreenRole::Kitchen));
        assert_eq!(screens.role_of("a guessed token"), None);
        // The file holds the hash, never the token, and survives a restart.
        let file = std::fs::read_to_string(dir.path().join("screens.json")).unwrap();
        assert!(!file.contains(&token));
        let again = Screens::load(Some(dir.path().to_path_buf()));
        assert_eq!(again.role_of(&token), Some(ScreenRole::Kitchen));
        let named = again.list()[0].id.clone();
        assert!(again.remove(&named).unwrap());
        assert_eq!(again.role_of(&token), None);
    }

    fn guest(n: u8) -> std::net::IpAddr {
        std::net::IpAddr::from([192, 168, 1, n])
    }

    #[test]
    fn a_guest_cannot_fill_the_managers_list() {
        let screens = Screens::load(None);
        // One address: two places, whatever it tries.
        for _ in 0..MAX_WAITING_PER_ADDRESS {
            assert!(
                screens
                    .ask("guest", ScreenRole::Manager, guest(66))
                    .is_some()
            );
        }
        assert!(
            screens
                .ask("guest", ScreenRole::Manager, guest(66))
                .is_none()
        );
        // The same address written as IPv4-mapped IPv6 is the same guest.
        let mapped =
            std::net::IpAddr::V6(std::net::Ipv4Addr::new(192, 168, 1, 66).to_ipv6_mapped());
        assert!(screens.ask("guest", ScreenRole::Manager, mapped).is_none());
        // The kitchen TV asking next still gets its code.
        assert!(
            screens
                .ask("Grill TV", ScreenRole::Kitchen, guest(20))
                .is_some()
        );
        // Many addresses: the list's bound.
        let mut n = 100;
        while screens.waiting().len() < MAX_WAITING {
            assert!(
                screens
                    .ask("guest", ScreenRole::Manager, guest(n))
                    .is_some()
            );
            n += 1;
        }
        assert!(
            screens
                .ask("guest", ScreenRole::Manager, guest(n))
                .is_none()
        );
        let id = screens.waiting()[0].id.clone();
        assert!(screens.deny(&id));
        assert!(
            screens
                .ask("guest", ScreenRole::Manager, guest(n))
                .is_some()
        );
    }
}
