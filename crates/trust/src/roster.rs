//! The roster's signatures: every row of the synced `device` entity is signed by the device
//! that wrote it (ECDSA P-256), over all of its fields, and names its own public key, whose
//! hash must be its id. A node checks this on every write it takes (`tilld` sets the check):
//! the signer must be a live hub-eligible roster member, or the row itself when the roster is
//! still empty (the shop's first device starts it).

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::{DeviceId, Identity};

/// The fields a signature covers, in this order.
pub const SIGNED_FIELDS: [&str; 9] = [
    "id",
    "name",
    "role",
    "cert",
    "public_key",
    "paired_at",
    "paired_by",
    "revoked_at",
    "signed_by",
];

const DOMAIN: &[u8] = b"capsule-pos roster v1\n";

/// What is signed: the domain, then each field as `name=<JSON value>` on its own line (absent
/// fields as `null`), so no two rows share a message.
pub fn message(row: &Map<String, Value>) -> Vec<u8> {
    let mut out = DOMAIN.to_vec();
    for f in SIGNED_FIELDS {
        out.extend_from_slice(f.as_bytes());
        out.push(b'=');
        let v = row.get(f).unwrap_or(&Value::Null);
        out.extend_from_slice(serde_json::to_string(v).expect("JSON").as_bytes());
        out.push(b'\n');
    }
    out
}

pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(text: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| format!("a roster row's {what} is not base64"))
}

/// A public key as the roster keeps it (base64 of the SubjectPublicKeyInfo).
pub fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    decode(text, "public key")
}

/// Signs `row` as `identity` (sets `signed_by` and `signature`).
pub fn sign_row(identity: &Identity, row: &mut Map<String, Value>) {
    row.insert(
        "signed_by".into(),
        Value::String(identity.device_id().to_string()),
    );
    let sig = identity.sign(&message(row));
    row.insert("signature".into(), Value::String(encode(&sig)));
}

/// The row's own public key (SubjectPublicKeyInfo, DER), checked against its id.
pub fn own_key(row: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let text = row
        .get("public_key")
        .and_then(Value::as_str)
        .ok_or("a roster row names its public key")?;
    let spki = decode(text, "public key")?;
    let id = row.get("id").and_then(Value::as_str).unwrap_or_default();
    if DeviceId::of_public_key(&spki).as_str() != id {
        return Err("a roster row's id is not the hash of its public key".into());
    }
    Ok(spki)
}

/// Checks `row`'s signature with the signer's public key (SPKI DER).
pub fn verify_row(row: &Map<String, Value>, signer_spki: &[u8]) -> Result<(), String> {
    let sig = row
        .get("signature")
        .and_then(Value::as_str)
        .ok_or("a roster row is signed")?;
    let sig = decode(sig, "signature")?;
    if crate::identity::verify(signer_spki, &message(row), &sig) {
        Ok(())
    } else {
        Err("a roster row's signature does not match its signer".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(of: &Identity, name: &str) -> Map<String, Value> {
        let mut r = Map::new();
        r.insert("id".into(), Value::String(of.device_id().to_string()));
        r.insert("name".into(), Value::String(name.into()));
        r.insert("role".into(), Value::String("till".into()));
        r.insert("cert".into(), Value::String(of.cert_pem().into()));
        r.insert(
            "public_key".into(),
            Value::String(encode(&of.public_key_der())),
        );
        r.insert(
            "paired_at".into(),
            Value::String("2026-12-07T12:00:00.000Z".into()),
        );
        r
    }

    #[test]
    fn a_signed_row_verifies_and_any_change_or_other_signer_does_not() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let host = Identity::load_or_create(a.path()).unwrap();
        let till = Identity::load_or_create(b.path()).unwrap();
        let mut r = row(&till, "Till 2");
        sign_row(&host, &mut r);
        assert_eq!(own_key(&r).unwrap(), till.public_key_der());
        verify_row(&r, &host.public_key_der()).unwrap();
        assert!(verify_row(&r, &till.public_key_der()).is_err());
        let mut renamed = r.clone();
        renamed.insert("role".into(), Value::String("hub-eligible".into()));
        assert!(verify_row(&renamed, &host.public_key_der()).is_err());
        let mut revoked = r.clone();
        revoked.insert(
            "revoked_at".into(),
            Value::String("2026-12-08T00:00:00.000Z".into()),
        );
        assert!(verify_row(&revoked, &host.public_key_der()).is_err());
        // A row naming a key that is not its own id's.
        let mut swapped = r.clone();
        swapped.insert(
            "public_key".into(),
            Value::String(encode(&host.public_key_der())),
        );
        assert!(own_key(&swapped).is_err());
    }
}
