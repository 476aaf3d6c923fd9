//! What the desktop app was asked to be: role, hub, data directory, demo; from the command
//! line first, then the environment, then the defaults (a double-clicked app is a demo hub).

use std::net::SocketAddr;
use std::path::PathBuf;

use capsule_node::Role;

pub const USAGE: &str = "\
Capsule POS desktop app: runs a hub or a till node in-process and shows its UI.

Usage: capsule-pos [--role hub|till] [--hub URL] [--data DIR] [--demo] [--listen ADDR]

  --role hub|till  what this machine is (env CAPSULE_ROLE; default: till if a hub URL is
                   given, else a hub with demo data)
  --hub URL        the hub a till follows, e.g. http://192.168.1.10:7700 (env CAPSULE_HUB)
  --data DIR       directory for the node's SQLite database (env CAPSULE_DATA; default: the
                   platform data directory, e.g. ~/.local/share/pos.capsule.app/<role>)
  --demo           seed an empty hub with a demo restaurant day
  --listen ADDR    where the node serves its API (env CAPSULE_LISTEN; default 127.0.0.1:0,
                   use e.g. 0.0.0.0:7700 on a hub that tills on the network follow)
";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub role: Role,
    pub hub_url: Option<String>,
    /// None: the platform data directory, chosen once Tauri knows it.
    pub data_dir: Option<PathBuf>,
    pub demo: bool,
    pub listen: SocketAddr,
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
    }
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let role = nonempty(role.or_else(|| env("CAPSULE_ROLE")));
    let hub_url = nonempty(hub.or_else(|| env("CAPSULE_HUB")));
    let data_dir = nonempty(data.or_else(|| env("CAPSULE_DATA"))).map(PathBuf::from);
    let listen = nonempty(listen.or_else(|| env("CAPSULE_LISTEN")));

    let role = match role.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("hub") => Role::Hub,
        Some("till") => Role::Till,
        Some(other) => return Err(format!("unknown role '{other}' (expected hub or till)")),
        // Nothing said: follow a hub if one is named, else be a demo hub so a double-clicked
        // app shows a real restaurant.
        None if hub_url.is_some() => Role::Till,
        None => {
            demo = true;
            Role::Hub
        }
    };
    match role {
        Role::Till if hub_url.is_none() => {
            return Err("a till needs --hub http://HOST:PORT (or CAPSULE_HUB)".into());
        }
        Role::Till if demo => {
            return Err("--demo seeds a hub; tills get the demo from their hub".into());
        }
        Role::Hub if hub_url.is_some() => {
            return Err("--hub is for tills; a hub serves its own data".into());
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
    fn nothing_given_is_a_demo_hub() {
        let l = run(&[], &[]).unwrap();
        assert_eq!(
            (l.role, l.demo, l.data_dir, l.hub_url),
            (Role::Hub, true, None, None)
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
    fn unknown_arguments_are_ignored() {
        let l = run(&["--automation", "--demo"], &[]).unwrap();
        assert_eq!(l.ignored, vec!["--automation".to_string()]);
        assert!(l.demo);
    }
}
