//! Gossip between paired devices: every datagram is signed by the device that sent it (its
//! roster key, ECDSA P-256) and carries a counter, so a receiver takes only datagrams from live
//! roster members, each once. Unsigned, unknown, removed, forged, replayed and garbage
//! datagrams are dropped and counted (`/metrics`). A node that is not paired gossips plainly,
//! as shops did before pairing; a paired one neither takes nor is understood by such gossip.
//!
//! The datagram: `CPG1`, the sender's device id (52 bytes), its epoch (8, the sender's start,
//! so a restart starts a new count), its counter (8), the chitchat message, the signature, and
//! the signature's length (1). The signature covers everything before it. Gossip is signed, not
//! encrypted: it says which nodes exist, their addresses and who leads, nothing a guest on the
//! LAN could not learn by watching the traffic to the hub.
//!
//! chitchat 0.13 keeps its message encoding to itself, so [`Codec`] borrows it through its own
//! UDP socket on loopback: a message to send is sent there and read back as bytes; a datagram
//! taken is handed to it from a loopback socket standing for the real sender, so chitchat sees
//! which peer it came from.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use async_trait::async_trait;
use capsule_trust::{DeviceId, Identity, Roster};
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};

const MAGIC: &[u8; 4] = b"CPG1";
const ID_LEN: usize = 52;
const HEADER: usize = 4 + ID_LEN + 8 + 8;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_507;
/// Counters this far behind the newest one seen from a sender are still taken once (datagrams
/// overtake each other); older ones are replays.
const WINDOW: u64 = 64;

/// Why datagrams were dropped, for `/metrics`.
#[derive(Debug, Default)]
pub struct Dropped {
    pub unsigned: AtomicU64,
    pub not_a_member: AtomicU64,
    pub bad_signature: AtomicU64,
    pub replayed: AtomicU64,
}

/// Datagrams dropped by this process's gossip, by reason.
pub static DROPPED: Dropped = Dropped {
    unsigned: AtomicU64::new(0),
    not_a_member: AtomicU64::new(0),
    bad_signature: AtomicU64::new(0),
    replayed: AtomicU64::new(0),
};

/// This device's key and the roster its gossip answers to.
#[derive(Clone)]
pub struct GossipTrust {
    pub identity: Arc<Identity>,
    pub roster: Roster,
}

impl std::fmt::Debug for GossipTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipTrust")
            .field("device", self.identity.device_id())
            .finish()
    }
}

/// Chitchat's UDP transport with signed datagrams once the node is paired.
pub struct SignedUdp {
    pub trust: GossipTrust,
}

#[async_trait]
impl Transport for SignedUdp {
    async fn open(&self, bind: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(bind)
            .await
            .with_context(|| format!("failed to bind to {bind}/UDP for gossip"))?;
        Ok(Box::new(SignedSocket {
            socket,
            codec: Codec::open().await?,
            trust: self.trust.clone(),
            epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            sent: 0,
            seen: HashMap::new(),
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

/// Peers a codec stands in for at once; past this the oldest is forgotten (a paired node only
/// hands over members' datagrams, so this is reached only by an unpaired node under a flood).
const MAX_STAND_INS: usize = 256;

/// chitchat's own encoding, reached through loopback (see the module's notes).
struct Codec {
    /// chitchat's UDP socket: encodes what it sends, decodes what it receives.
    chitchat: UdpSocket,
    chitchat_addr: SocketAddr,
    /// Where chitchat's encoded messages are read back.
    tap: tokio::net::UdpSocket,
    tap_addr: SocketAddr,
    /// One loopback socket per real sender, by sender, and the sender by socket address.
    stand_ins: HashMap<SocketAddr, tokio::net::UdpSocket>,
    senders: HashMap<SocketAddr, SocketAddr>,
    order: std::collections::VecDeque<SocketAddr>,
    buf: Box<[u8]>,
}

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl Codec {
    async fn open() -> anyhow::Result<Codec> {
        let chitchat = UdpSocket::open(LOOPBACK).await?;
        let chitchat_addr = chitchat.local_addr()?;
        let tap = tokio::net::UdpSocket::bind(LOOPBACK)
            .await
            .context("a loopback socket for gossip (is the loopback interface up?)")?;
        let tap_addr = tap.local_addr()?;
        Ok(Codec {
            chitchat,
            chitchat_addr,
            tap,
            tap_addr,
            stand_ins: HashMap::new(),
            senders: HashMap::new(),
            order: Default::default(),
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
        })
    }

    /// `envelope` as chitchat puts it on the wire.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        self.chitchat.send(self.tap_addr, envelope).await?;
        // Loopback does not lose datagrams; if one ever were, this message is skipped, not
        // the sending of every later one.
        tokio::time::timeout(std::time::Duration::from_secs(1), async {
            loop {
                let (n, from) = self.tap.recv_from(&mut self.buf).await?;
                if from == self.chitchat_addr {
                    return Ok(self.buf[..n].to_vec());
                }
            }
        })
        .await
        .unwrap_or_else(|_| Ok(Vec::new()))
    }

    /// Hands `message` from `sender` to chitchat (no waiting: safe when a receive is cancelled).
    fn hand_over(&mut self, sender: SocketAddr, message: &[u8]) -> anyhow::Result<()> {
        if !self.stand_ins.contains_key(&sender) {
            if self.order.len() >= MAX_STAND_INS
                && let Some(old) = self.order.pop_front()
                && let Some(s) = self.stand_ins.remove(&old)
                && let Ok(a) = s.local_addr()
            {
                self.senders.remove(&a);
            }
            let std = std::net::UdpSocket::bind(LOOPBACK)?;
            std.set_nonblocking(true)?;
            let socket = tokio::net::UdpSocket::from_std(std)?;
            self.senders.insert(socket.local_addr()?, sender);
            self.stand_ins.insert(sender, socket);
            self.order.push_back(sender);
        }
        let _ = self.stand_ins[&sender].try_send_to(message, self.chitchat_addr);
        Ok(())
    }

    /// The next message chitchat decoded, with its real sender.
    async fn decoded(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let out = self.chitchat.recv().await?;
            if let Some(sender) = self.senders.get(&out.from_addr) {
                return Ok(RecvOutcome {
                    from_addr: *sender,
                    ..out
                });
            }
        }
    }
}

/// The newest counters taken from one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    epoch: u64,
    top: u64,
    /// Bit k: counter `top - k` was taken.
    mask: u64,
}

impl Seen {
    /// Takes `counter` of `epoch` if it was not taken yet (and is not too old).
    fn take(this: &mut Option<Seen>, epoch: u64, counter: u64) -> bool {
        match this {
            Some(s) if epoch < s.epoch => false,
            Some(s) if epoch == s.epoch => {
                if counter > s.top {
                    let shift = counter - s.top;
                    s.mask = if shift >= WINDOW { 0 } else { s.mask << shift };
                    s.mask |= 1;
                    s.top = counter;
                    true
                } else {
                    let back = s.top - counter;
                    if back >= WINDOW || s.mask & (1 << back) != 0 {
                        return false;
                    }
                    s.mask |= 1 << back;
                    true
                }
            }
            // A first datagram, or the sender restarted.
            _ => {
                *this = Some(Seen {
                    epoch,
                    top: counter,
                    mask: 1,
                });
                true
            }
        }
    }
}

struct SignedSocket {
    socket: tokio::net::UdpSocket,
    codec: Codec,
    trust: GossipTrust,
    epoch: u64,
    sent: u64,
    seen: HashMap<DeviceId, Option<Seen>>,
    buf: Box<[u8]>,
}

/// A signed datagram for `message`, as `identity`.
pub fn seal(identity: &Identity, epoch: u64, counter: u64, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + message.len() + 73);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(identity.device_id().as_str().as_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(message);
    let sig = identity.sign(&out);
    out.extend_from_slice(&sig);
    out.push(sig.len() as u8);
    out
}

/// What a signed datagram says, if it is one: sender, epoch, counter, message, and the signed
/// bytes with their signature.
struct Opened<'a> {
    sender: DeviceId,
    epoch: u64,
    counter: u64,
    message: &'a [u8],
    signed: &'a [u8],
    signature: &'a [u8],
}

fn open(datagram: &[u8]) -> Option<Opened<'_>> {
    let (&sig_len, rest) = datagram.split_last()?;
    let sig_len = usize::from(sig_len);
    if !datagram.starts_with(MAGIC) || rest.len() < HEADER + sig_len {
        return None;
    }
    let (signed, signature) = rest.split_at(rest.len() - sig_len);
    let sender = std::str::from_utf8(&signed[4..4 + ID_LEN])
        .ok()?
        .to_string();
    let sender = DeviceId::try_from(sender).ok()?;
    let num = |at: usize| u64::from_be_bytes(signed[at..at + 8].try_into().expect("8 bytes"));
    Some(Opened {
        sender,
        epoch: num(4 + ID_LEN),
        counter: num(4 + ID_LEN + 8),
        message: &signed[HEADER..],
        signed,
        signature,
    })
}

impl SignedSocket {
    /// The chitchat message in `datagram`, if a live member sent it and it was not taken yet.
    fn accept(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        let count = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
            None
        };
        let Some(d) = open(datagram) else {
            return count(&DROPPED.unsigned);
        };
        let Some(member) = self.trust.roster.live(&d.sender) else {
            return count(&DROPPED.not_a_member);
        };
        if !capsule_trust::verify_signature(&member.public_key, d.signed, d.signature) {
            return count(&DROPPED.bad_signature);
        }
        // Only after the signature: a forger cannot grow this map or move a sender's window.
        let seen = self.seen.entry(d.sender).or_default();
        if !Seen::take(seen, d.epoch, d.counter) {
            return count(&DROPPED.replayed);
        }
        Some(d.message.to_vec())
    }
}

#[async_trait]
impl Socket for SignedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.socket
            .local_addr()
            .context("failed to get UDP socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let message = self.codec.encode(envelope).await?;
        if message.is_empty() {
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let datagram = if self.trust.roster.is_closed() {
            self.sent += 1;
            seal(&self.trust.identity, self.epoch, self.sent, &message)
        } else {
            message
        };
        if datagram.len() > MAX_DATAGRAM {
            tracing::warn!(
                bytes = datagram.len(),
                "a gossip message too large for one datagram; not sent"
            );
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        match self.socket.send_to(&datagram, to).await {
            Ok(n) => Ok(SendOutcome { num_bytes_sent: n }),
            // A peer that went away (ICMP unreachable): gossip goes on with the others.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                Ok(SendOutcome { num_bytes_sent: 0 })
            }
            Err(e) => Err(e).context("failed to send gossip"),
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            tokio::select! {
                // Handed over earlier (perhaps by a receive that was cancelled since).
                decoded = self.codec.decoded() => return decoded,
                got = self.socket.recv_from(&mut self.buf) => {
                    let (n, from) = match got {
                        Ok(r) => r,
                        Err(e) if is_transient(&e) => continue,
                        Err(e) => return Err(e).context("fatal UDP recv error"),
                    };
                    let datagram = self.buf[..n].to_vec();
                    let message = if self.trust.roster.is_closed() {
                        match self.accept(&datagram) {
                            Some(m) => m,
                            None => continue,
                        }
                    } else {
                        datagram
                    };
                    // A stand-in that cannot be made (out of file descriptors) costs this
                    // datagram, never the gossip loop.
                    if let Err(e) = self.codec.hand_over(from, &message) {
                        tracing::warn!(error = %e, "a gossip datagram dropped");
                    }
                }
            }
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::OutOfMemory
    )
}

/// The drop counters as Prometheus text.
pub fn render(out: &mut String) {
    for (reason, v) in [
        ("unsigned", &DROPPED.unsigned),
        ("not_a_member", &DROPPED.not_a_member),
        ("bad_signature", &DROPPED.bad_signature),
        ("replayed", &DROPPED.replayed),
    ] {
        capsule_protocol::metrics::render_value(
            out,
            "capsule_gossip_dropped_total",
            "counter",
            "gossip datagrams a paired node dropped, by reason",
            &format!("{{reason=\"{reason}\"}}"),
            v.load(Ordering::Relaxed) as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_taken_once_within_the_window_and_never_from_an_older_start() {
        let mut s = None;
        assert!(Seen::take(&mut s, 5, 10));
        assert!(!Seen::take(&mut s, 5, 10), "a replay");
        assert!(Seen::take(&mut s, 5, 8), "one that was overtaken");
        assert!(!Seen::take(&mut s, 5, 8));
        assert!(Seen::take(&mut s, 5, 100));
        assert!(!Seen::take(&mut s, 5, 100 - WINDOW), "too old to tell");
        assert!(Seen::take(&mut s, 5, 100 - WINDOW + 1));
        assert!(
            !Seen::take(&mut s, 4, 1000),
            "from before the sender restarted"
        );
        assert!(Seen::take(&mut s, 6, 1), "the sender restarted");
        assert!(!Seen::take(&mut s, 5, 101));
    }

    #[test]
    fn a_datagram_opens_only_as_it_was_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::load_or_create(dir.path()).unwrap();
        let d = seal(&id, 7, 9, b"hello");
        let o = open(&d).unwrap();
        assert_eq!((o.epoch, o.counter, o.message), (7, 9, &b"hello"[..]));
        assert_eq!(&o.sender, id.device_id());
        assert!(capsule_trust::verify_signature(
            &id.public_key_der(),
            o.signed,
            o.signature
        ));
        let mut altered = d.clone();
        altered[HEADER] ^= 1;
        let o = open(&altered).unwrap();
        assert!(!capsule_trust::verify_signature(
            &id.public_key_der(),
            o.signed,
            o.signature
        ));
        for garbage in [&b""[..], b"CPG1", &[0xffu8; 200][..], &d[..d.len() - 1]] {
            if let Some(o) = open(garbage) {
                assert!(!capsule_trust::verify_signature(
                    &id.public_key_der(),
                    o.signed,
                    o.signature
                ));
            }
        }
    }
}
