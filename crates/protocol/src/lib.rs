//! Capsule POS protocol: the schema model and every type that crosses the wire.
//!
//! This crate does no I/O. The store, hub and replica all speak these types, so a change to
//! the wire format is a change here and nowhere else.

pub mod defaults;
pub mod local_time;
pub mod metrics;
pub mod schema;
pub mod validate;
pub mod wire;

pub use schema::{
    Column, ColumnType, Entity, Part, PartKind, Schema, SchemaError, TableDef, TableRole,
};
pub use validate::{ValidationError, canonical_timestamp, prepare_batch, validate_batch};
pub use wire::*;

/// Milliseconds since the Unix epoch, UTC.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Milliseconds since the epoch as the stored timestamp form.
pub fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An amount in minor units as an exact decimal with `digits` places (0-3): 1850, 2 ->
/// "18.50"; -5, 3 -> "-0.005". Never through floating point.
pub fn minor_to_decimal(minor: i64, digits: u32) -> String {
    let digits = digits.min(3);
    let scale = 10u64.pow(digits);
    let sign = if minor < 0 { "-" } else { "" };
    let a = minor.unsigned_abs();
    if digits == 0 {
        format!("{sign}{a}")
    } else {
        format!("{sign}{}.{:0w$}", a / scale, a % scale, w = digits as usize)
    }
}

/// The current time as RFC 3339 UTC text with millisecond precision, the form of every
/// `timestamp` column.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The time `after` from now, in the same form as [`now_rfc3339`].
pub fn rfc3339_after(after: std::time::Duration) -> String {
    let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    chrono::Utc::now()
        .checked_add_signed(after)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
