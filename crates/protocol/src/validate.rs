//! Schema checks on incoming mutations, done before anything touches a database.

use std::collections::HashSet;

use serde_json::Value;

use crate::schema::{Column, ColumnType, ID_FIELD, Schema};
use crate::wire::{Action, MutationBatch};

/// Longest accepted row id; ids are UUIDs in practice.
pub const MAX_ID_LEN: usize = 128;
/// Most mutations accepted in one request, so one client cannot hold the writer for long.
pub const MAX_MUTATIONS_PER_REQUEST: usize = 200;
/// Longest node id (a batch's `source`, copied into every capsule it causes).
pub const MAX_NODE_ID_LEN: usize = 64;
/// Timestamps outside these years are typing or clock errors, never a sale.
pub const TIMESTAMP_YEARS: std::ops::RangeInclusive<i32> = 2000..=2999;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mutation {index}: {message}")]
pub struct ValidationError {
    pub index: usize,
    pub message: String,
}

/// Ids travel in URL paths and comma-separated lists, so they are kept to a safe alphabet.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A node id (a batch's `source`): the id alphabet, at most [`MAX_NODE_ID_LEN`] bytes.
pub fn is_valid_node_id(id: &str) -> bool {
    id.len() <= MAX_NODE_ID_LEN && is_valid_id(id)
}

/// Parses a UTC timestamp and returns its one stored form, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
///
/// Accepted: exactly `YYYY-MM-DDTHH:MM:SS` with an optional fraction of 1 to 9 digits and an
/// upper-case `Z`. Offsets (even `+00:00`), lower-case `t`/`z`, a space, leap seconds and
/// years outside [`TIMESTAMP_YEARS`] are refused, so two spellings of one instant never
/// reach the rows (they compare as text).
pub fn canonical_timestamp(s: &str) -> Result<String, String> {
    let refuse = || {
        format!(
            "must be an RFC 3339 UTC timestamp like 2026-11-24T12:00:00.000Z (upper-case T and Z, no offset), got '{s}'"
        )
    };
    let b = s.as_bytes();
    let shape_ok = b.len() >= 20
        && b.len() <= 30
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            0..=18 => c.is_ascii_digit(),
            19 if b.len() > 20 => c == b'.',
            _ if i == b.len() - 1 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok || b.len() == 21 {
        return Err(refuse());
    }
    let t = chrono::NaiveDateTime::parse_from_str(&s[..19], "%Y-%m-%dT%H:%M:%S")
        .map_err(|_| refuse())?;
    // chrono reads second 60 as a leap second; a till's clock never shows one.
    if &s[17..19] == "60" {
        return Err(refuse());
    }
    use chrono::Datelike;
    if !TIMESTAMP_YEARS.contains(&t.year()) {
        return Err(format!(
            "year {} is outside {}..={}, got '{s}'",
            t.year(),
            TIMESTAMP_YEARS.start(),
            TIMESTAMP_YEARS.end()
        ));
    }
    let millis = if b.len() > 20 {
        let digits = &s[20..s.len() - 1];
        format!("{digits:0<3}")[..3].to_string()
    } else {
        "000".to_string()
    };
    Ok(format!("{}.{millis}Z", &s[..19]))
}

/// Checks one value against its column: type, declared range or length, enum values, UTC
/// timestamps.
pub fn check_value(col: &Column, v: &Value) -> Result<(), String> {
    if v.is_null() {
        return if col.required {
            Err(format!("'{}' is required and cannot be null", col.name))
        } else {
            Ok(())
        };
    }
    let ok = match col.ty {
        ColumnType::Text => match v.as_str() {
            Some(s) if col.max_len.is_some_and(|n| s.len() > n) => {
                return Err(format!(
                    "'{}' is {} bytes long; at most {} are allowed",
                    col.name,
                    s.len(),
                    col.max_len.unwrap_or_default()
                ));
            }
            Some(_) => true,
            None => false,
        },
        ColumnType::Integer | ColumnType::Money => match v.as_i64() {
            Some(n) => {
                let lo = col.min.unwrap_or(i64::MIN);
                let hi = col.max.unwrap_or(i64::MAX);
                if n < lo || n > hi {
                    return Err(format!(
                        "'{}' must be between {lo} and {hi}, got {n}",
                        col.name
                    ));
                }
                true
            }
            None => false,
        },
        ColumnType::Boolean => v.is_boolean(),
        ColumnType::Timestamp => match v.as_str() {
            Some(s) => {
                return canonical_timestamp(s)
                    .map(drop)
                    .map_err(|e| format!("'{}' {e}", col.name));
            }
            None => false,
        },
        ColumnType::Enum => match v.as_str() {
            Some(s) if col.values.iter().any(|x| x == s) => true,
            Some(s) => {
                return Err(format!(
                    "'{}' must be one of {}, got '{s}'",
                    col.name,
                    col.values.join("|")
                ));
            }
            None => false,
        },
    };
    if ok {
        Ok(())
    } else {
        let want = match col.ty {
            ColumnType::Text | ColumnType::Enum | ColumnType::Timestamp => "a string",
            ColumnType::Integer => "an integer",
            ColumnType::Money => "an integer amount in minor units",
            ColumnType::Boolean => "true or false",
        };
        Err(format!("'{}' must be {want}, got {v}", col.name))
    }
}

/// Checks a whole request against the schema. The first problem found is reported with the
/// index of the mutation it is in.
pub fn validate_batch(schema: &Schema, batch: &MutationBatch) -> Result<(), ValidationError> {
    if batch.mutations.is_empty() {
        return Err(ValidationError {
            index: 0,
            message: "the request has no mutations".into(),
        });
    }
    if batch.mutations.len() > MAX_MUTATIONS_PER_REQUEST {
        return Err(ValidationError {
            index: MAX_MUTATIONS_PER_REQUEST,
            message: format!("at most {MAX_MUTATIONS_PER_REQUEST} mutations per request"),
        });
    }
    if let Some(source) = &batch.source
        && !is_valid_node_id(source)
    {
        return Err(ValidationError {
            index: 0,
            message: format!(
                "source must be a node id: 1 to {MAX_NODE_ID_LEN} characters of A-Z a-z 0-9 . _ : - ({} bytes given)",
                source.len()
            ),
        });
    }
    let mut mids = HashSet::new();
    for (index, m) in batch.mutations.iter().enumerate() {
        let fail = |message: String| ValidationError { index, message };
        if uuid::Uuid::parse_str(&m.mid).is_err() {
            return Err(fail(format!("mid '{}' is not a UUID", m.mid)));
        }
        if !mids.insert(m.mid.as_str()) {
            return Err(fail(format!(
                "mid '{}' appears twice in one request",
                m.mid
            )));
        }
        if let Some(by) = &m.by {
            // Ids and a time, like the rows' own: a forwarded actor is data like any other.
            for (what, id) in [
                ("staff", &by.staff),
                ("approver", &by.approver),
                ("device", &by.device),
            ] {
                if let Some(id) = id
                    && !is_valid_id(id)
                {
                    return Err(fail(format!("by.{what} is not a valid id")));
                }
            }
            if by.approved.as_ref().is_some_and(|p| {
                p.len() > 64
                    || !p
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
            }) {
                return Err(fail("by.approved is not a permission name".into()));
            }
            if [by.menu_price, by.menu_modifier_price]
                .into_iter()
                .flatten()
                .any(|p| !(0..=100_000_000_000).contains(&p))
            {
                return Err(fail("by.menu_price is not a price".into()));
            }
            if by.menu_modifiers.as_ref().is_some_and(|m| m.len() > 500) {
                return Err(fail("by.menu_modifiers is too long".into()));
            }
            if let Some(at) = &by.at {
                canonical_timestamp(at).map_err(|e| fail(format!("by.at {e}")))?;
            }
        }
        if m.base.is_some_and(|b| b < 0) {
            return Err(fail("base must be a hub version (0 or more)".into()));
        }
        let table = schema.table(&m.table).ok_or_else(|| {
            fail(format!(
                "unknown table '{}' (tables: {})",
                m.table,
                schema.tables.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        match m.row.get(ID_FIELD) {
            Some(Value::String(id)) if is_valid_id(id) => {}
            Some(Value::String(id)) => {
                return Err(fail(format!(
                    "row.id '{id}' must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ : - (a UUID is best)"
                )));
            }
            Some(other) => return Err(fail(format!("row.id must be a string, got {other}"))),
            None => return Err(fail("row.id is missing".into())),
        }
        for (key, value) in &m.row {
            if key == ID_FIELD {
                continue;
            }
            let col = table
                .column(key)
                .ok_or_else(|| fail(format!("table '{}' has no column '{key}'", m.table)))?;
            if m.action == Action::Delete {
                return Err(fail(format!("a delete takes only row.id, not '{key}'")));
            }
            if col.derived {
                return Err(fail(format!(
                    "'{}.{key}' is computed by the core and cannot be written",
                    m.table
                )));
            }
            check_value(col, value).map_err(fail)?;
            check_setting(&m.table, key, value).map_err(fail)?;
        }
        match m.action {
            Action::Insert | Action::Save => {
                for col in table.columns.iter().filter(|c| c.required) {
                    if m.row.get(&col.name).is_none_or(Value::is_null) {
                        return Err(fail(format!("'{}.{}' is required", m.table, col.name)));
                    }
                }
            }
            Action::Merge if m.row.len() < 2 => {
                return Err(fail("a merge needs at least one column besides id".into()));
            }
            Action::Merge | Action::Delete => {}
        }
    }
    Ok(())
}

/// Settings whose values are names from a list the schema cannot spell: the time zone (an
/// IANA name the bundled tz database knows) and the country (two capital letters).
fn check_setting(table: &str, key: &str, value: &Value) -> Result<(), String> {
    let (Some(text), "shop_settings") = (value.as_str(), table) else {
        return Ok(());
    };
    match key {
        "time_zone" => crate::local_time::zone(text).map(|_| ()),
        "country" if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_uppercase()) => Err(
            format!("country '{text}' must be an ISO 3166 code of two capital letters (SA)"),
        ),
        _ => Ok(()),
    }
}

/// Rewrites every timestamp of a batch [`validate_batch`] accepted into its stored form.
pub fn canonicalize(schema: &Schema, batch: &mut MutationBatch) {
    for m in &mut batch.mutations {
        let Some(table) = schema.table(&m.table) else {
            continue;
        };
        for (key, value) in m.row.iter_mut() {
            if let (Some(col), Value::String(s)) = (table.column(key), &*value)
                && col.ty == ColumnType::Timestamp
                && let Ok(c) = canonical_timestamp(s)
            {
                *value = Value::String(c);
            }
        }
    }
}

/// Validates a batch and puts it in stored form: what every write path calls first.
pub fn prepare_batch(schema: &Schema, batch: &mut MutationBatch) -> Result<(), ValidationError> {
    validate_batch(schema, batch)?;
    canonicalize(schema, batch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Mutation;
    use serde_json::json;

    fn batch(table: &str, action: Action, row: Value) -> MutationBatch {
        MutationBatch {
            mutations: vec![Mutation {
                mid: uuid::Uuid::new_v4().to_string(),
                table: table.into(),
                action,
                row: row.as_object().unwrap().clone(),
                base: None,
                by: None,
            }],
            source: None,
        }
    }

    fn err(b: MutationBatch) -> String {
        validate_batch(&Schema::builtin(), &b).unwrap_err().message
    }

    #[test]
    fn a_complete_order_line_passes() {
        let b = batch(
            "order_line",
            Action::Insert,
            json!({"id": "l1", "order_id": "o1", "name_en": "Falafel wrap", "name_ar": "لفافة فلافل",
                   "qty": 2, "unit_price": 1250, "created_at": "2026-11-24T12:00:00Z"}),
        );
        validate_batch(&Schema::builtin(), &b).unwrap();
    }

    #[test]
    fn a_shop_names_a_time_zone_and_a_country_that_exist() {
        let settings = |row: Value| batch("shop_settings", Action::Merge, row);
        validate_batch(
            &Schema::builtin(),
            &settings(json!({"id": "shop", "time_zone": "Asia/Riyadh", "country": "SA"})),
        )
        .unwrap();
        assert!(
            err(settings(json!({"id": "shop", "time_zone": "Riyadh"})))
                .contains("unknown time zone 'Riyadh'")
        );
        assert!(err(settings(json!({"id": "shop", "country": "sa"}))).contains("ISO 3166"));
    }

    #[test]
    fn bad_inputs_are_named() {
        assert!(
            err(batch("menu", Action::Insert, json!({"id": "x"}))).contains("unknown table 'menu'")
        );
        assert!(
            err(batch(
                "order_line",
                Action::Merge,
                json!({"id": "x", "colour": "red"})
            ))
            .contains("no column 'colour'")
        );
        assert!(
            err(batch(
                "order_line",
                Action::Merge,
                json!({"id": "x", "qty": 1.5})
            ))
            .contains("'qty' must be an integer")
        );
        assert!(
            err(batch(
                "order_line",
                Action::Merge,
                json!({"id": "x", "unit_price": "12.50"})
            ))
            .contains("minor units")
        );
        assert!(
            err(batch("order_line", Action::Merge, json!({"qty": 1})))
                .contains("row.id is missing")
        );
        assert!(
            err(batch(
                "order_line",
                Action::Merge,
                json!({"id": 7, "qty": 1})
            ))
            .contains("row.id must be a string")
        );
        assert!(
            err(batch(
                "order_line",
                Action::Merge,
                json!({"id": "x", "line_total": 1})
            ))
            .contains("computed by the core")
        );
        assert!(
            err(batch(
                "order_header",
                Action::Merge,
                json!({"id": "x", "status": "eaten"})
            ))
            .contains("one of open|sent")
        );
        assert!(
            err(batch(
                "order_header",
                Action::Merge,
                json!({"id": "x", "updated_at": "2026-11-24T15:00:00+03:00"})
            ))
            .contains("UTC")
        );
        assert!(
            err(batch(
                "order_header",
                Action::Merge,
                json!({"id": "x", "updated_at": "yesterday"})
            ))
            .contains("RFC 3339")
        );
        assert!(
            err(batch(
                "order_line",
                Action::Insert,
                json!({"id": "x", "order_id": "o"})
            ))
            .contains("is required")
        );
        assert!(
            err(batch(
                "order_line",
                Action::Delete,
                json!({"id": "x", "qty": 1})
            ))
            .contains("only row.id")
        );
    }

    #[test]
    fn ids_keep_to_a_url_safe_alphabet() {
        for bad in ["", "a,b", ",", "a b", "x&y", "caf\u{e9}"] {
            let e = err(batch(
                "order_line",
                Action::Merge,
                json!({"id": bad, "qty": 1}),
            ));
            assert!(e.contains("A-Z a-z 0-9"), "{bad:?}: {e}");
        }
        assert!(is_valid_id("01a20f96-dfe6-72fa-950e-078237d8ffd6"));
    }

    #[test]
    fn mids_must_be_uuids_and_unique_in_a_request() {
        let mut b = batch(
            "order_header",
            Action::Merge,
            json!({"id": "x", "note": "hi"}),
        );
        b.mutations[0].mid = "not-a-uuid".into();
        assert!(err(b.clone()).contains("not a UUID"));
        b.mutations[0].mid = uuid::Uuid::new_v4().to_string();
        b.mutations.push(b.mutations[0].clone());
        let e = validate_batch(&Schema::builtin(), &b).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(e.message.contains("twice"));
    }

    #[test]
    fn values_outside_their_declared_range_are_refused() {
        let cases = [
            (
                "order_line",
                json!({"id": "x", "qty": -5}),
                "between 1 and 10000",
            ),
            (
                "order_line",
                json!({"id": "x", "qty": 0}),
                "between 1 and 10000",
            ),
            (
                "order_line",
                json!({"id": "x", "unit_price": -1}),
                "between 0 and",
            ),
            (
                "order_line",
                json!({"id": "x", "discount": -300}),
                "between 0 and",
            ),
            (
                "order_payment",
                json!({"id": "x", "amount": i64::MAX}),
                "between 1 and",
            ),
            (
                "order_payment",
                json!({"id": "x", "amount": -33934}),
                "between 1 and",
            ),
            (
                "order_header",
                json!({"id": "x", "tax_rate_bp": 1_000_000_000_000_000i64}),
                "between 0 and 10000",
            ),
            (
                "order_header",
                json!({"id": "x", "order_no": i64::MAX}),
                "between 1 and 1000000000",
            ),
            (
                "order_header",
                json!({"id": "x", "note": "n".repeat(501)}),
                "at most 500",
            ),
        ];
        for (table, row, want) in cases {
            let e = err(batch(table, Action::Merge, row.clone()));
            assert!(e.contains(want), "{table} {row}: {e}");
        }
        validate_batch(
            &Schema::builtin(),
            &batch(
                "order_line",
                Action::Merge,
                json!({"id": "x", "qty": 10_000, "unit_price": 100_000_000_000i64}),
            ),
        )
        .unwrap();
    }

    #[test]
    fn timestamps_have_one_stored_form() {
        for bad in [
            "2026-11-24T12:00:00+00:00",
            "2026-11-24t12:00:00Z",
            "2026-11-24T12:00:00z",
            "2026-11-24 12:00:00Z",
            "2026-11-24T23:59:60Z",
            "0000-01-01T00:00:00Z",
            "2026-02-30T12:00:00Z",
            "2026-11-24T12:00:00.Z",
            "2026-11-24T12:00:00.1234567890Z",
            "2026-11-24T12:00Z",
            "2026-11-24T12:00:00",
        ] {
            assert!(canonical_timestamp(bad).is_err(), "{bad} was accepted");
            let e = err(batch(
                "order_header",
                Action::Merge,
                json!({"id": "x", "updated_at": bad}),
            ));
            assert!(e.contains("updated_at"), "{bad}: {e}");
        }
        for (given, stored) in [
            ("2026-11-24T12:00:00Z", "2026-11-24T12:00:00.000Z"),
            ("2026-11-24T12:00:00.5Z", "2026-11-24T12:00:00.500Z"),
            ("2026-11-24T12:00:00.123456789Z", "2026-11-24T12:00:00.123Z"),
            ("2026-11-24T12:00:00.123Z", "2026-11-24T12:00:00.123Z"),
        ] {
            assert_eq!(canonical_timestamp(given).unwrap(), stored);
        }
        let mut b = batch(
            "order_header",
            Action::Merge,
            json!({"id": "x", "updated_at": "2026-11-24T12:00:00Z"}),
        );
        prepare_batch(&Schema::builtin(), &mut b).unwrap();
        assert_eq!(b.mutations[0].row["updated_at"], "2026-11-24T12:00:00.000Z");
    }

    #[test]
    fn a_source_must_be_a_short_node_id() {
        let mut b = batch(
            "order_header",
            Action::Merge,
            json!({"id": "x", "note": "hi"}),
        );
        b.source = Some("s".repeat(1_800_000));
        assert!(err(b.clone()).contains("source must be a node id"));
        b.source = Some("till 1".into());
        assert!(err(b.clone()).contains("source must be a node id"));
        b.source = Some("till-1".into());
        validate_batch(&Schema::builtin(), &b).unwrap();
    }

    #[test]
    fn a_column_named_twice_in_a_row_is_refused() {
        let text = r#"{"mutations": [{"mid": "3b8f5f5e-4d6f-4b86-9a53-3f0a3c1f0a11", "table": "order_line",
            "action": "merge", "row": {"id": "x", "qty": 1, "qty": -5}}]}"#;
        let e = serde_json::from_str::<MutationBatch>(text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'qty' appears twice"), "{e}");
    }
}
