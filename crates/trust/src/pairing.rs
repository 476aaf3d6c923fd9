//! Pairing a new device with a 6-digit code, as easily as a Bluetooth speaker and without
//! trusting the network in between.
//!
//! The paired device (host) opens an [`Offer`]: a random code valid 3 minutes, single use,
//! closed after 5 tries, and a random session id. The new device (joiner) learns the session
//! and the host's device id (from the QR code or the host's answer), and both run SPAKE2 with
//! the code, identities bound to both device ids and the session:
//!
//! 1. joiner -> host: [`JoinHello`] (its device id and its SPAKE2 message). Each hello uses up
//!    one of the code's 5 tries: one guess per exchange, whatever the joiner does next.
//! 2. host -> joiner: [`HostReply`] (its SPAKE2 message and a confirmation of the key).
//! 3. joiner -> host: [`JoinFinish`] (its confirmation and its [`Details`] sealed under the
//!    key). A joiner with the wrong code, or a man in the middle relaying with his own
//!    messages, fails the confirmation here: he holds another key.
//! 4. host -> joiner: the host's [`Details`], sealed.
//!
//! The code never crosses the network: SPAKE2's messages let an eavesdropper try no code
//! offline, and an active attacker tries exactly one per exchange (spake2's own tests and
//! this module's check the rest). The crate has no key confirmation: it is steps 2 and 3, an
//! HMAC over the whole transcript with keys derived (HKDF) from SPAKE2's.

use std::time::{Duration, Instant};

use ring::{aead, hkdf, hmac};
use spake2::{Ed25519Group, Identity as SpakeId, Password, Spake2};

use crate::DeviceId;

pub const CODE_DIGITS: usize = 6;
/// How long a code may be used after it is shown.
pub const CODE_VALID: Duration = Duration::from_secs(180);
/// Exchanges one code allows (each one guess at most).
pub const MAX_TRIES: u32 = 5;

const PROTOCOL: &[u8] = b"capsule-pos pairing v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("the code has expired; show a new one")]
    Expired,
    #[error("the code was tried too many times; show a new one")]
    TooManyTries,
    #[error("the code was used already; show a new one")]
    Used,
    #[error("the code does not match (or someone is in between)")]
    WrongCode,
    #[error("the session does not match this code")]
    WrongSession,
    #[error("a pairing message was altered on the way")]
    Tampered,
    #[error("a pairing message cannot be read: {0}")]
    Invalid(String),
}

/// What each side tells the other once the key is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Details {
    pub device_id: DeviceId,
    pub name: String,
    /// `hub-eligible`, `till` or `screen`.
    pub role: String,
    /// The device's certificate.
    pub cert: Vec<u8>,
    /// Its public key (SubjectPublicKeyInfo, DER): the device id is its hash.
    #[serde(default)]
    pub public_key: Vec<u8>,
    /// From the host: the shop's other live devices as it knows them, so the joiner can reach
    /// the hub (which may not be the host) before the roster itself arrives.
    #[serde(default)]
    pub members: Vec<crate::Anchor>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinHello {
    pub session: String,
    pub joiner: DeviceId,
    pub spake: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostReply {
    pub spake: Vec<u8>,
    pub confirm: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JoinFinish {
    pub confirm: Vec<u8>,
    /// The joiner's [`Details`], sealed.
    pub sealed: Vec<u8>,
}

/// The keys one exchange derived, and the transcript they confirm.
struct Keys {
    confirm_host: hmac::Key,
    confirm_joiner: hmac::Key,
    seal_joiner: aead::LessSafeKey,
    seal_host: aead::LessSafeKey,
    transcript: Vec<u8>,
}

fn spake_ids(session: &str, host: &DeviceId, joiner: &DeviceId) -> (SpakeId, SpakeId) {
    let id = |side: &str, device: &DeviceId| {
        SpakeId::new(format!("capsule-pos/pair/v1/{session}/{side}/{device}").as_bytes())
    };
    (id("host", host), id("joiner", joiner))
}

/// Everything both sides saw, in one order: what the confirmations and seals are bound to.
fn transcript(session: &str, host: &DeviceId, joiner: &DeviceId, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(256);
    for part in [
        PROTOCOL,
        session.as_bytes(),
        host.as_str().as_bytes(),
        joiner.as_str().as_bytes(),
        a,
        b,
    ] {
        t.extend_from_slice(&(part.len() as u32).to_be_bytes());
        t.extend_from_slice(part);
    }
    t
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(shared: &[u8], transcript: Vec<u8>) -> Keys {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, PROTOCOL).extract(shared);
    let bytes = |label: &[u8]| {
        let info = [label];
        let okm = prk.expand(&info, Len(32)).expect("32 bytes of HKDF-SHA256");
        let mut out = [0u8; 32];
        okm.fill(&mut out).expect("32 bytes");
        out
    };
    let mac = |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, &bytes(label));
    let seal = |label: &[u8]| {
        aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &bytes(label)).expect("a 32-byte key"),
        )
    };
    Keys {
        confirm_host: mac(b"confirm host"),
        confirm_joiner: mac(b"confirm joiner"),
        seal_joiner: seal(b"seal joiner"),
        seal_host: seal(b"seal host"),
        transcript,
    }
}

/// Seals `details` (each key seals one message, so a fixed nonce is never reused).
fn seal(key: &aead::LessSafeKey, transcript: &[u8], details: &Details) -> Vec<u8> {
    let mut data = serde_json::to_vec(details).expect("details serialise");
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key([0; 12]),
        aead::Aad::from(transcript),
        &mut data,
    )
    .expect("sealing cannot fail for a small message");
    data
}

fn open(key: &aead::LessSafeKey, transcript: &[u8], sealed: &[u8]) -> Result<Details, PairError> {
    let mut data = sealed.to_vec();
    let plain = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key([0; 12]),
            aead::Aad::from(transcript),
            &mut data,
        )
        .map_err(|_| PairError::Tampered)?;
    serde_json::from_slice(plain).map_err(|e| PairError::Invalid(e.to_string()))
}

/// A code shown on a paired device, with what it allows.
pub struct Offer {
    host: DeviceId,
    code: String,
    session: String,
    shown_at: Instant,
    tries: u32,
    used: bool,
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer")
            .field("host", &self.host)
            .field("session", &self.session)
            .field("tries", &self.tries)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

/// The host's half of one exchange, between its reply and the joiner's finish.
pub struct HostPending {
    joiner: DeviceId,
    keys: Keys,
}

impl Offer {
    /// A new random code for `host`, shown at `now`.
    pub fn new(host: DeviceId, now: Instant) -> Offer {
        use rand::Rng;
        let mut rng = rand::rng();
        let code = format!("{:06}", rng.random_range(0..1_000_000u32));
        let session: String = (0..16)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        Offer::with_code(host, &code, &session, now)
    }

    pub fn with_code(host: DeviceId, code: &str, session: &str, now: Instant) -> Offer {
        Offer {
            host,
            code: code.to_string(),
            session: session.to_string(),
            shown_at: now,
            tries: 0,
            used: false,
        }
    }

    /// The 6 digits to show.
    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn session(&self) -> &str {
        &self.session
    }

    pub fn host(&self) -> &DeviceId {
        &self.host
    }

    /// When the code was shown (it is valid [`CODE_VALID`] from then).
    pub fn shown_at(&self) -> Instant {
        self.shown_at
    }

    /// Tries left before the code closes.
    pub fn tries_left(&self) -> u32 {
        MAX_TRIES.saturating_sub(self.tries)
    }

    /// Whether the code can still be tried at `now`, and why not.
    pub fn usable(&self, now: Instant) -> Result<(), PairError> {
        if self.used {
            Err(PairError::Used)
        } else if now.duration_since(self.shown_at) > CODE_VALID {
            Err(PairError::Expired)
        } else if self.tries >= MAX_TRIES {
            Err(PairError::TooManyTries)
        } else {
            Ok(())
        }
    }

    /// Step 2: answers a joiner's hello. Uses one of the code's tries, whatever follows.
    pub fn answer(
        &mut self,
        hello: &JoinHello,
        now: Instant,
    ) -> Result<(HostReply, HostPending), PairError> {
        self.usable(now)?;
        if hello.session != self.session {
            return Err(PairError::WrongSession);
        }
        self.tries += 1;
        let (id_host, id_joiner) = spake_ids(&self.session, &self.host, &hello.joiner);
        let (state, msg) = Spake2::<Ed25519Group>::start_a(
            &Password::new(self.code.as_bytes()),
            &id_host,
            &id_joiner,
        );
        let shared = state
            .finish(&hello.spake)
            .map_err(|e| PairError::Invalid(format!("{e:?}")))?;
        let t = transcript(&self.session, &self.host, &hello.joiner, &msg, &hello.spake);
        let keys = derive(&shared, t);
        let confirm = hmac::sign(&keys.confirm_host, &keys.transcript)
            .as_ref()
            .to_vec();
        Ok((
            HostReply {
                spake: msg,
                confirm,
            },
            HostPending {
                joiner: hello.joiner.clone(),
                keys,
            },
        ))
    }

    /// Step 4: checks the joiner's confirmation and opens its details; on success the code is
    /// used up and the host's own details go back sealed. The details must name the device
    /// that ran the exchange.
    pub fn finish(
        &mut self,
        pending: HostPending,
        msg: &JoinFinish,
        host_details: &Details,
        now: Instant,
    ) -> Result<(Details, Vec<u8>), PairError> {
        if self.used {
            return Err(PairError::Used);
        }
        if now.duration_since(self.shown_at) > CODE_VALID {
            return Err(PairError::Expired);
        }
        let k = &pending.keys;
        hmac::verify(&k.confirm_joiner, &k.transcript, &msg.confirm)
            .map_err(|_| PairError::WrongCode)?;
        let joiner = open(&k.seal_joiner, &k.transcript, &msg.sealed)?;
        if joiner.device_id != pending.joiner {
            return Err(PairError::Tampered);
        }
        self.used = true;
        Ok((joiner, seal(&k.seal_host, &k.transcript, host_details)))
    }
}

/// The new device's side of one exchange.
pub struct Joiner {
    state: Spake2<Ed25519Group>,
    msg: Vec<u8>,
    session: String,
    host: DeviceId,
    joiner: DeviceId,
}

/// The joiner after its finish, waiting for the host's sealed details.
pub struct JoinerWaiting {
    keys: Keys,
    host: DeviceId,
}

impl Joiner {
    /// Step 1, with the code the person typed, the session and the host's device id.
    pub fn start(
        code: &str,
        session: &str,
        host: &DeviceId,
        joiner: &DeviceId,
    ) -> (Joiner, JoinHello) {
        let (id_host, id_joiner) = spake_ids(session, host, joiner);
        let (state, msg) =
            Spake2::<Ed25519Group>::start_b(&Password::new(code.as_bytes()), &id_host, &id_joiner);
        let hello = JoinHello {
            session: session.to_string(),
            joiner: joiner.clone(),
            spake: msg.clone(),
        };
        (
            Joiner {
                state,
                msg,
                session: session.to_string(),
                host: host.clone(),
                joiner: joiner.clone(),
            },
            hello,
        )
    }

    /// Step 3: checks the host's confirmation (a wrong code, or someone in between, fails
    /// here), then seals this device's details.
    pub fn on_reply(
        self,
        reply: &HostReply,
        mine: &Details,
    ) -> Result<(JoinerWaiting, JoinFinish), PairError> {
        let shared = self
            .state
            .finish(&reply.spake)
            .map_err(|e| PairError::Invalid(format!("{e:?}")))?;
        let t = transcript(
            &self.session,
            &self.host,
            &self.joiner,
            &reply.spake,
            &self.msg,
        );
        let keys = derive(&shared, t);
        hmac::verify(&keys.confirm_host, &keys.transcript, &reply.confirm)
            .map_err(|_| PairError::WrongCode)?;
        let finish = JoinFinish {
            confirm: hmac::sign(&keys.confirm_joiner, &keys.transcript)
                .as_ref()
                .to_vec(),
            sealed: seal(&keys.seal_joiner, &keys.transcript, mine),
        };
        Ok((
            JoinerWaiting {
                keys,
                host: self.host,
            },
            finish,
        ))
    }
}

impl JoinerWaiting {
    /// Step 4's answer: the host's details, which must name the host the exchange was with.
    pub fn open(self, sealed: &[u8]) -> Result<Details, PairError> {
        let host = open(&self.keys.seal_host, &self.keys.transcript, sealed)?;
        if host.device_id != self.host {
            return Err(PairError::Tampered);
        }
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> DeviceId {
        DeviceId::of_public_key(&[n; 32])
    }

    fn details(id: &DeviceId, name: &str) -> Details {
        Details {
            device_id: id.clone(),
            name: name.into(),
            role: "till".into(),
            cert: vec![1, 2, 3],
            public_key: vec![4, 5, 6],
            members: vec![],
        }
    }

    /// One whole exchange between `offer` and a joiner typing `code`.
    fn pair(
        offer: &mut Offer,
        code: &str,
        joiner: &DeviceId,
        now: Instant,
    ) -> Result<(Details, Details), PairError> {
        let (j, hello) = Joiner::start(code, offer.session(), &offer.host().clone(), joiner);
        let (reply, pending) = offer.answer(&hello, now)?;
        let (waiting, finish) = j.on_reply(&reply, &details(joiner, "Till 2"))?;
        let host = details(&offer.host().clone(), "Manager PC");
        let (joiner_details, sealed) = offer.finish(pending, &finish, &host, now)?;
        Ok((joiner_details, waiting.open(&sealed)?))
    }

    #[test]
    fn the_right_code_pairs_both_devices_once() {
        let now = Instant::now();
        let mut offer = Offer::new(device(1), now);
        assert_eq!(offer.code().len(), CODE_DIGITS);
        let code = offer.code().to_string();
        let (at_host, at_joiner) = pair(&mut offer, &code, &device(2), now).unwrap();
        assert_eq!(at_host, details(&device(2), "Till 2"));
        assert_eq!(at_joiner, details(&device(1), "Manager PC"));
        // Single use.
        assert_eq!(
            pair(&mut offer, &code, &device(3), now),
            Err(PairError::Used)
        );
    }

    #[test]
    fn a_wrong_code_fails_and_five_tries_close_the_code() {
        let now = Instant::now();
        let mut offer = Offer::with_code(device(1), "123456", "s1", now);
        for wrong in ["000000", "111111", "222222", "333333", "444444"] {
            assert_eq!(
                pair(&mut offer, wrong, &device(2), now),
                Err(PairError::WrongCode)
            );
        }
        assert_eq!(offer.tries_left(), 0);
        // Even the right code is refused now: 5 guesses per code, never more.
        assert_eq!(
            pair(&mut offer, "123456", &device(2), now),
            Err(PairError::TooManyTries)
        );
    }

    #[test]
    fn a_joiner_who_walks_away_after_the_reply_still_used_a_try() {
        let now = Instant::now();
        let mut offer = Offer::with_code(device(1), "123456", "s1", now);
        for _ in 0..MAX_TRIES {
            let (_, hello) = Joiner::start("999999", "s1", &device(1), &device(9));
            offer.answer(&hello, now).unwrap();
        }
        let (_, hello) = Joiner::start("123456", "s1", &device(1), &device(2));
        assert_eq!(
            offer.answer(&hello, now).err(),
            Some(PairError::TooManyTries)
        );
    }

    #[test]
    fn a_code_expires_after_three_minutes() {
        let shown = Instant::now();
        let mut offer = Offer::with_code(device(1), "123456", "s1", shown);
        let later = shown + CODE_VALID + Duration::from_secs(1);
        assert_eq!(
            pair(&mut offer, "123456", &device(2), later),
            Err(PairError::Expired)
        );
    }

    #[test]
    fn a_man_in_the_middle_without_the_code_pairs_nobody() {
        let now = Instant::now();
        let mut offer = Offer::with_code(device(1), "123456", "s1", now);
        let (joiner, hello) = Joiner::start("123456", "s1", &device(1), &device(2));
        // Mallory passes the joiner's message on as his own device's.
        let mallory = device(66);
        let relayed = JoinHello {
            joiner: mallory.clone(),
            ..hello.clone()
        };
        let (reply, pending) = offer.answer(&relayed, now).unwrap();
        // The joiner's key differs from the host's (the identities are bound in): it stops.
        assert_eq!(
            joiner
                .on_reply(&reply, &details(&device(2), "Till 2"))
                .err(),
            Some(PairError::WrongCode)
        );
        // Mallory has no key to confirm with: a guess is refused, and costs the code a try.
        let forged = JoinFinish {
            confirm: vec![0; 32],
            sealed: vec![0; 64],
        };
        let host = details(&device(1), "Manager PC");
        assert_eq!(
            offer.finish(pending, &forged, &host, now).err(),
            Some(PairError::WrongCode)
        );
        // Mallory in both directions, each with his own guessed code: both sides refuse him.
        let (joiner, hello) = Joiner::start("123456", "s1", &device(1), &device(2));
        let mut fake_host = Offer::with_code(device(1), "654321", "s1", now);
        let (fake_reply, _) = fake_host.answer(&hello, now).unwrap();
        assert_eq!(
            joiner
                .on_reply(&fake_reply, &details(&device(2), "Till 2"))
                .err(),
            Some(PairError::WrongCode)
        );
        let (fake_joiner, to_host) = Joiner::start("654321", "s1", &device(1), &mallory);
        let (reply, _) = offer.answer(&to_host, now).unwrap();
        assert_eq!(
            fake_joiner
                .on_reply(&reply, &details(&mallory, "Mallory"))
                .err(),
            Some(PairError::WrongCode)
        );
        assert_eq!(
            offer.tries_left(),
            MAX_TRIES - 2,
            "each exchange used a try"
        );
    }

    #[test]
    fn sealed_details_altered_on_the_way_are_refused() {
        let now = Instant::now();
        let mut offer = Offer::with_code(device(1), "123456", "s1", now);
        let (j, hello) = Joiner::start("123456", "s1", &device(1), &device(2));
        let (reply, pending) = offer.answer(&hello, now).unwrap();
        let (_, mut finish) = j.on_reply(&reply, &details(&device(2), "Till 2")).unwrap();
        let last = finish.sealed.len() - 1;
        finish.sealed[last] ^= 1;
        assert_eq!(
            offer
                .finish(pending, &finish, &details(&device(1), "Manager PC"), now)
                .err(),
            Some(PairError::Tampered)
        );
    }

    #[test]
    fn the_code_is_never_in_what_crosses_the_network_or_in_debug_output() {
        let now = Instant::now();
        let mut offer = Offer::with_code(device(1), "482913", "s1", now);
        let (j, hello) = Joiner::start("482913", "s1", &device(1), &device(2));
        let (reply, pending) = offer.answer(&hello, now).unwrap();
        let (_, finish) = j.on_reply(&reply, &details(&device(2), "Till 2")).unwrap();
        let wire = format!(
            "{} {} {} {:?}",
            serde_json::to_string(&hello).unwrap(),
            serde_json::to_string(&reply).unwrap(),
            serde_json::to_string(&finish).unwrap(),
            offer
        );
        assert!(!wire.contains("482913"));
        let _ = pending;
    }
}
