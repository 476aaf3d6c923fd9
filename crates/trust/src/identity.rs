//! This device's own identity: a key pair and a self-signed certificate made at its first start
//! and kept in its data directory (the key readable by the node's user only, never logged), and
//! its device id, a hash of the public key, so a renewed certificate keeps the id.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::TrustError;

const KEY_FILE: &str = "device.key";
const CERT_FILE: &str = "device.crt";
/// RFC 4648 base32, lower case (read aloud and compared on two screens more easily than hex).
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// 256 bits in base32, unpadded.
const DEVICE_ID_LEN: usize = 52;

/// A device's id: the SHA-256 of its public key (SubjectPublicKeyInfo, DER) in base32.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    pub fn of_public_key(spki_der: &[u8]) -> DeviceId {
        DeviceId(base32(&Sha256::digest(spki_der)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 7 characters, for people comparing two screens.
    pub fn short(&self) -> &str {
        &self.0[..7]
    }
}

impl TryFrom<String> for DeviceId {
    type Error = TrustError;
    fn try_from(s: String) -> Result<DeviceId, TrustError> {
        if s.len() == DEVICE_ID_LEN && s.bytes().all(|b| BASE32.contains(&b)) {
            Ok(DeviceId(s))
        } else {
            Err(TrustError::BadDeviceId(s.chars().take(64).collect()))
        }
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// This device's key pair and certificate. `Debug` shows the device id only.
pub struct Identity {
    device_id: DeviceId,
    key: rcgen::KeyPair,
    cert_der: Vec<u8>,
    cert_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("device_id", &self.device_id)
            .field("key", &"(in the data directory)")
            .finish()
    }
}

impl Identity {
    /// The identity kept in `dir`, made there first if there is none: the key (PKCS#8, mode
    /// 0600, made looser by someone else: set back) and a certificate for it (made again from
    /// the key when missing or unreadable: the device id stays).
    pub fn load_or_create(dir: &Path) -> Result<Identity, TrustError> {
        let key_path = dir.join(KEY_FILE);
        let fail = |path: &Path, why: String| TrustError::Identity {
            path: path.display().to_string(),
            why,
        };
        fs::create_dir_all(dir).map_err(|e| fail(dir, e.to_string()))?;
        let key = match fs::read_to_string(&key_path) {
            Ok(pem) => {
                fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))
                    .map_err(|e| fail(&key_path, e.to_string()))?;
                rcgen::KeyPair::from_pem(&pem)
                    .map_err(|e| fail(&key_path, format!("not a key this build reads: {e}")))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate()
                    .map_err(|e| fail(&key_path, format!("cannot make a key: {e}")))?;
                write_private(&key_path, key.serialize_pem().as_bytes())
                    .map_err(|e| fail(&key_path, e.to_string()))?;
                key
            }
            Err(e) => return Err(fail(&key_path, e.to_string())),
        };
        let device_id = DeviceId::of_public_key(&key.public_key_der());
        let cert_path = dir.join(CERT_FILE);
        let cert_der = fs::read_to_string(&cert_path)
            .ok()
            .and_then(|pem| pem_der(&pem))
            .filter(|der| certifies(der, &key));
        let mut identity = Identity {
            device_id,
            key,
            cert_der: Vec::new(),
            cert_pem: String::new(),
        };
        match cert_der {
            Some(der) => {
                identity.cert_pem =
                    fs::read_to_string(&cert_path).map_err(|e| fail(&cert_path, e.to_string()))?;
                identity.cert_der = der;
            }
            None => identity.renew_certificate(dir)?,
        }
        Ok(identity)
    }

    /// Makes and stores a new self-signed certificate for the same key (the id stays). Its
    /// dates span centuries: trust comes from the roster, never from a clock.
    pub fn renew_certificate(&mut self, dir: &Path) -> Result<(), TrustError> {
        let cert_path = dir.join(CERT_FILE);
        let fail = |why: String| TrustError::Identity {
            path: cert_path.display().to_string(),
            why,
        };
        let mut params = rcgen::CertificateParams::new(vec!["capsule-pos".to_string()])
            .map_err(|e| fail(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("Capsule POS device {}", self.device_id),
        );
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2999, 12, 31);
        let cert = params
            .self_signed(&self.key)
            .map_err(|e| fail(e.to_string()))?;
        let pem = cert.pem();
        let tmp = cert_path.with_extension("crt.new");
        fs::write(&tmp, &pem).map_err(|e| fail(e.to_string()))?;
        fs::rename(&tmp, &cert_path).map_err(|e| fail(e.to_string()))?;
        self.cert_der = cert.der().to_vec();
        self.cert_pem = pem;
        Ok(())
    }

    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// The certificate, DER, as peers receive it when pairing.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The private key, PKCS#8 DER, for this node's TLS configuration only.
    pub fn key_pkcs8_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// The public key (SubjectPublicKeyInfo, DER): its SHA-256 is the device id.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.public_key_der()
    }

    /// Signs `message` with this device's key (ECDSA P-256, SHA-256, ASN.1 DER signature).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &self.key.serialize_der(),
            &rng,
        )
        .expect("the device key is a P-256 key");
        pair.sign(&rng, message)
            .expect("signing with a valid key")
            .as_ref()
            .to_vec()
    }
}

/// A P-256 public key in SubjectPublicKeyInfo form is this 26-byte header and the 65-byte point.
const P256_SPKI_HEADER: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Whether `signature` is `spki_der`'s signature of `message` (false for any other key type).
pub fn verify(spki_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    if spki_der.len() != 91 || spki_der[..26] != P256_SPKI_HEADER {
        return false;
    }
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        &spki_der[26..],
    )
    .verify(message, signature)
    .is_ok()
}

/// Writes `bytes` to a new file at `path` readable by this user only (made under another name
/// first, so a crash never leaves half a key or half a list of secrets).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let p = pem::parse(pem).ok()?;
    (p.tag() == "CERTIFICATE").then(|| p.into_contents())
}

/// Whether certificate `der` carries `key`'s public key (a certificate left from another key
/// is made again).
fn certifies(der: &[u8], key: &rcgen::KeyPair) -> bool {
    let spki = key.public_key_der();
    der.windows(spki.len()).any(|w| w == spki.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_keeps_its_id_across_restarts_and_a_renewed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        let id = first.device_id().clone();
        assert_eq!(id.as_str().len(), DEVICE_ID_LEN);
        let again = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(again.device_id(), &id);
        assert_eq!(again.cert_der(), first.cert_der());
        let mut renewed = again;
        renewed.renew_certificate(dir.path()).unwrap();
        assert_ne!(renewed.cert_der(), first.cert_der());
        let after = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(after.device_id(), &id);
        assert_eq!(after.cert_der(), renewed.cert_der());
        // A lost certificate is made again for the same key.
        fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        assert_eq!(
            Identity::load_or_create(dir.path()).unwrap().device_id(),
            &id
        );
        // Another device has another id.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            Identity::load_or_create(other.path()).unwrap().device_id(),
            &id
        );
    }

    #[test]
    fn the_key_is_readable_by_the_node_only_and_never_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::load_or_create(dir.path()).unwrap();
        let key_path = dir.path().join(KEY_FILE);
        let mode = fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key_pem = fs::read_to_string(&key_path).unwrap();
        let body: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let shown = format!("{identity:?} {}", identity.device_id());
        assert!(!shown.contains(&body[..40]), "{shown}");
        assert!(shown.contains(identity.device_id().as_str()));
        // Made readable by others (a careless copy): set back at the next start.
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_device_id_is_checked_when_read() {
        assert!(DeviceId::try_from("a".repeat(DEVICE_ID_LEN)).is_ok());
        assert!(DeviceId::try_from("A".repeat(DEVICE_ID_LEN)).is_err());
        assert!(DeviceId::try_from("a".repeat(DEVICE_ID_LEN - 1)).is_err());
        assert!(serde_json::from_str::<DeviceId>("\"1nope\"").is_err());
    }
}
