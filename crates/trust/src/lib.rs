//! Who belongs to the shop: this device's own key and certificate ([`Identity`], its
//! [`DeviceId`] a hash of the public key) and pairing a new device with a 6-digit code
//! ([`pairing`]: SPAKE2 bound to both device ids and the session, an explicit key
//! confirmation, then each side's certificate, name and role sealed under the derived key).
//! No I/O beyond the identity's two files: the node carries the messages.

mod identity;
mod members;
pub mod pairing;
pub mod roster;
pub mod tls;

pub use identity::{DeviceId, Identity, verify as verify_signature, write_private};
pub use members::{Anchor, DeviceRole, Member, Roster};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("the device identity in {path}: {why}")]
    Identity { path: String, why: String },
    #[error("not a device id: {0}")]
    BadDeviceId(String),
}
