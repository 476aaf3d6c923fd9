//! What the desktop app was asked to be: role, hub, data directory, demo; from the command
//! line first, then the environment, then the defaults (a double-clicked app is a demo hub).

use std::net::SocketAddr;
use std::path::PathBuf;

use capsule_node::Role;

pub const USAGE: &str = "\
Capsule POS desktop app: runs a hub or a till node in-process and shows its UI.

Usage: capsule-pos [--role auto|hub|till|screen] [--hub URL] [--data DIR] [--demo]
                   [--listen ADDR] [--name NAME] [--priority N] [--peer URL]... [--station S]

  --role ROLE      what this machine is (env CAPSULE_ROLE): auto joins the shop's network
                   and lets the election pick the hub (the default; with demo data when no
                   hub URL is given); hub and till --hub URL are fixed setups; screen is a
                   kitchen display, full screen, never hub
  --hub URL        the hub a till follows, e.g. http://192.168.1.10:7700 (env CAPSULE_HUB)
  --data DIR       directory for the node's SQLite database (env CAPSULE_DATA; default: the
                   platform data directory, e.g. ~/.local/share/pos.capsule.app/<role>)
  --demo           seed an empty hub with a demo restaurant day
  --listen ADDR    where the node serves its API (env CAPSULE_LISTEN; default 127.0.0.1:0,
                   use e.g. 0.0.0.0:7700 so the shop's other machines reach it)
  --name NAME      what staff call this machine, e.g. \"Till 2\" (env CAPSULE_NAME)
  --priority N     election priority, higher on the manager's PC (env CAPSULE_PRIORITY)
  --peer URL       another machine of the shop, where multicast is blocked (repeatable;
                   env CAPSULE_PEERS, comma-separated)
  --station S      kitchen screen: the station it shows, e.g. grill (env CAPSULE_STATION)
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub role: Role,
    pub hub_url: Option<String>,
    /// None: the platform data directory, chosen once Tauri knows it.
    pub data_dir: Option<PathBuf>,
    pub demo: bool,
    pub listen: SocketAddr,
    pub name: Option<String>,
    pub priority: i64,
    pub peers: Vec<String>,
    /// Kitchen screen: the station its display opens on.
    pub station: Option<String>,
    /// Arguments we did not understand (WebDriver and desktop launchers add some); ignored.
    pub ignored: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Launch),
    Help,
}

impl Launch {
    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::Hub => "hub",
            Role::Till => "till",
            Role::Auto => "auto",
            Role::Screen => "screen",
        }
    }
}

/// Parses `args` (without the program name); `env` looks up environment variables.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Parsed, String> {
    let mut role: Option<String> = None;
    let mut hub: Option<String> = None;
    let mut data: Option<String> = None;
    let mut listen: Option<String> = None;
    let mut node_name: Option<String> = None;
    let mut priority: Option<String> = None;
    let mut station: Option<String> = None;
    let mut peers: Vec<String> = Vec::new();
    let mut peer: Option<String> = None;
    let mut demo = false;
    let mut ignored = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let slot = match name.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--demo" => {
                demo = true;
                continue;
            }
            "--role" => &mut role,
            "--hub" => &mut hub,
            "--data" => &mut data,
            "--listen" => &mut listen,
            "--name" => &mut node_name,
            "--priority" => &mut priority,
            "--station" => &mut station,
            "--peer" => &mut peer,
            _ => {
                ignored.push(arg);
                continue;
            }
        };
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        *slot = Some(value);
        peers.extend(peer.take());
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let role = nonempty(role.or_else(|| env("CAPSULE_ROLE")));
    let hub_url = nonempty(hub.or_else(|| env("CAPSULE_HUB")));
    let data_dir = nonempty(data.or_else(|| env("CAPSULE_DATA"))).map(PathBuf::from);
    let listen = nonempty(listen.or_else(|| env("CAPSULE_LISTEN")));
    let name = nonempty(node_name.or_else(|| env("CAPSULE_NAME")));
    let station = nonempty(station.or_else(|| env("CAPSULE_STATION")));
    if peers.is_empty()
        && let Some(list) = env("CAPSULE_PEERS")
    {
        peers = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
    }
    let priority = match nonempty(priority.or_else(|| env("CAPSULE_PRIORITY"))) {
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|p| (0..=1000).contains(p))
            .ok_or_else(|| format!("--priority must be a number from 0 to 1000, got '{p}'"))?,
        None => 1,
    };

    let role = match role.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("hub") => Role::Hub,
        Some("till") => Role::Till,
        Some("auto") => Role::Auto,
        Some("screen") => Role::Screen,
        Some(other) => {
            return Err(format!(
                "unknown role '{other}' (expected auto, hub, till or screen)"
            ));
        }
        // Nothing said: follow a hub if one is named, else join the shop's network with demo
        // data (seeded if this machine ends up hub of an empty shop), so a double-clicked app
        // shows a real restaurant.
        None if hub_url.is_some() => Role::Till,
        None => {
            demo = true;
            Role::Auto
        }
    };
    if station.is_some() && role != Role::Screen {
        return Err("--station is for kitchen screens (--role screen)".into());
    }
    match role {
        Role::Till if hub_url.is_none() => {
            return Err("a till needs --hub http://HOST:PORT (or CAPSULE_HUB)".into());
        }
        Role::Till if demo => {
            return Err("--demo seeds a hub; tills get the demo from their hub".into());
        }
        Role::Hub | Role::Auto if hub_url.is_some() => {
            return Err("--hub is for fixed tills and screens; --role auto finds the hub".into());
        }
        Role::Screen if demo => {
            return Err("--demo seeds a hub; kitchen screens never are one".into());
        }
        _ => {}
    }
    if let Some(url) = &hub_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(format!("--hub must be an http:// URL, got '{url}'"));
    }
    let listen = match listen {
        Some(s) => s
            .parse()
            .map_err(|_| format!("--listen must be an address like 127.0.0.1:0, got '{s}'"))?,
        None => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    Ok(Parsed::Run(Launch {
        role,
        hub_url: hub_url.map(|u| u.trim_end_matches('/').to_string()),
        data_dir,
        demo,
        listen,
        name,
        priority,
        peers,
        station,
        ignored,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Launch, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match parse(args.iter().map(|s| s.to_string()), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })? {
            Parsed::Run(l) => Ok(l),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn nothing_given_joins_the_shop_with_demo_data() {
        let l = run(&[], &[]).unwrap();
        assert_eq!(
            (l.role, l.demo, l.data_dir, l.hub_url),
            (Role::Auto, true, None, None)
        );
        assert_eq!(l.listen, "127.0.0.1:0".parse().unwrap());
    }

    #[test]
    fn a_hub_url_makes_a_till() {
        let l = run(&["--hub", "http://10.0.0.2:7700/"], &[]).unwrap();
        assert_eq!(l.role, Role::Till);
        assert!(!l.demo);
        assert_eq!(l.hub_url.as_deref(), Some("http://10.0.0.2:7700"));
        let l = run(&[], &[("CAPSULE_HUB", "http://h:1")]).unwrap();
        assert_eq!(l.role, Role::Till);
    }

    #[test]
    fn explicit_hub_has_no_demo_unless_asked() {
        let l = run(&["--role=hub", "--data", "/tmp/x"], &[]).unwrap();
        assert_eq!((l.role, l.demo), (Role::Hub, false));
        assert_eq!(l.data_dir, Some(PathBuf::from("/tmp/x")));
        let l = run(&["--role", "hub", "--demo"], &[]).unwrap();
        assert!(l.demo);
    }

    #[test]
    fn arguments_win_over_environment() {
        let l = run(
            &["--role", "hub", "--data", "/a"],
            &[("CAPSULE_ROLE", "till"), ("CAPSULE_DATA", "/b")],
        )
        .unwrap();
        assert_eq!(l.role, Role::Hub);
        assert_eq!(l.data_dir, Some(PathBuf::from("/a")));
    }

    #[test]
    fn contradictions_are_errors() {
        assert!(run(&["--role", "till"], &[]).is_err());
        assert!(run(&["--role", "till", "--hub", "http://h:1", "--demo"], &[]).is_err());
        assert!(run(&["--role", "hub", "--hub", "http://h:1"], &[]).is_err());
        assert!(run(&["--role", "kitchen"], &[]).is_err());
        assert!(run(&["--hub", "h:1"], &[]).is_err());
        assert!(run(&["--data"], &[]).is_err());
        assert!(run(&["--listen", "nope"], &[]).is_err());
    }

    #[test]
    fn a_kitchen_screen_names_its_station_and_peers_repeat() {
        let l = run(
            &[
                "--role",
                "screen",
                "--station",
                "grill",
                "--peer",
                "http://a:1",
                "--peer=http://b:2",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            (l.role, l.station.as_deref()),
            (Role::Screen, Some("grill"))
        );
        assert_eq!(l.peers, ["http://a:1", "http://b:2"]);
        let l = run(
            &["--role", "auto"],
            &[
                ("CAPSULE_PEERS", "http://a:1, http://b:2"),
                ("CAPSULE_PRIORITY", "10"),
            ],
        )
        .unwrap();
        assert_eq!((l.peers.len(), l.priority), (2, 10));
        assert!(run(&["--role", "auto", "--station", "grill"], &[]).is_err());
        assert!(run(&["--priority", "-1"], &[]).is_err());
    }

    #[test]
    fn unknown_arguments_are_ignored() {
        let l = run(&["--automation", "--demo"], &[]).unwrap();
        assert_eq!(l.ignored, vec!["--automation".to_string()]);
        assert!(l.demo);
    }
}
