//! Where a node may send print jobs: printers on the shop's LAN only (private addresses), never
//! loopback, link-local (169.254.0.0/16, where cloud metadata answers), public addresses or the
//! port nodes listen on, unless a manager allows an address by name (`--allow-printer`). Checked
//! when a printer is written (an address given as an IP) and again after every name resolves,
//! right before the connection, so a name that points elsewhere later is caught too.

use std::net::{IpAddr, SocketAddr};

/// The addresses a manager allowed (`HOST` for every port of it, or `HOST:PORT`), and the
/// node's own listening port (never a printer, even when allowed).
#[derive(Debug, Clone, Default)]
pub struct PrinterPolicy {
    pub allowed: Vec<String>,
    pub own_ports: Vec<u16>,
}

/// Splits `host:port` (`[v6]:port` too); the port must be there.
pub fn split(address: &str) -> Result<(String, u16), String> {
    let bad = || format!("a printer address is host:port, e.g. 192.168.1.50:9100, got '{address}'");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// On the shop's LAN: a private IPv4 range or an IPv6 unique-local address.
fn is_lan(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_private(),
            None => (v6.segments()[0] & 0xfe00) == 0xfc00,
        },
    }
}

impl PrinterPolicy {
    fn allows_by_name(&self, address: &str, host: &str) -> bool {
        self.allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(address) || a.eq_ignore_ascii_case(host))
    }

    /// Checks an address as written (a name passes here and is checked once resolved).
    pub fn check_written(&self, address: &str) -> Result<(), String> {
        let (host, port) = split(address)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.check_resolved(address, &host, SocketAddr::new(ip, port))?;
        }
        Ok(())
    }

    /// Checks one address a printer's name resolved to, right before connecting to it.
    pub fn check_resolved(&self, address: &str, host: &str, to: SocketAddr) -> Result<(), String> {
        let ip = to.ip();
        // The port nodes listen on, on any host: this node's own API or another node's.
        if self.own_ports.contains(&to.port()) {
            return Err(format!(
                "printer address {address} is this node's own API (or another node's), not a printer"
            ));
        }
        if self.allows_by_name(address, host) || is_lan(ip) {
            return Ok(());
        }
        let what = if ip.is_loopback() {
            "this computer itself"
        } else if matches!(ip, IpAddr::V4(v4) if v4.is_link_local()) {
            "a link-local address"
        } else {
            "not on the shop's network"
        };
        Err(format!(
            "printer address {address} ({ip}) is {what}: printers must be on the shop's LAN (10.x, 172.16–31.x, 192.168.x); a manager can allow this one with --allow-printer {address}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_printers_pass_and_everything_else_is_refused_unless_allowed() {
        let p = PrinterPolicy {
            allowed: vec!["127.0.0.1:9100".into()],
            own_ports: vec![7700],
        };
        for ok in [
            "192.168.1.50:9100",
            "10.0.0.9:9100",
            "172.20.1.2:9100",
            "[fd00::5]:9100",
            "printer.lan:9100",
            "127.0.0.1:9100",
        ] {
            assert!(p.check_written(ok).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.1:22",
            "169.254.169.254:80",
            "8.8.8.8:9100",
            "0.0.0.0:7700",
            "127.0.0.1:7700",
            "192.168.1.5:7700",
            "[::1]:9100",
            "172.32.0.1:9100",
            "nonsense",
            "10.0.0.1:0",
            "10.0.0.1:99999",
        ] {
            assert!(p.check_written(bad).is_err(), "{bad}");
        }
        // A name is checked once it resolves: to a public or loopback address, refused.
        let e = p
            .check_resolved(
                "evil.example:9100",
                "evil.example",
                "93.184.216.34:9100".parse().unwrap(),
            )
            .unwrap_err();
        assert!(e.contains("not on the shop's network"), "{e}");
        // Even an allowed host never reaches the node's own port.
        let host_allowed = PrinterPolicy {
            allowed: vec!["127.0.0.1".into()],
            own_ports: vec![7700],
        };
        assert!(host_allowed.check_written("127.0.0.1:9100").is_ok());
        assert!(host_allowed.check_written("127.0.0.1:7700").is_err());
    }
}
