//! Schema checks on incoming mutations, done before anything touches a database.

use std::collections::HashSet;

use serde_json::Value;

use crate::schema::{Column, ColumnType, ID_FIELD, Schema};
use crate::wire::{Action, MutationBatch};

/// Longest accepted row id; ids are UUIDs in practice.
pub const MAX_ID_LEN: usize = 128;
/// Most mutations accepted in one request, so one client cannot hold the writer for long.
pub const MAX_MUTATIONS_PER_REQUEST: usize = 1000;

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

/// Checks one value against its column: type, enum values, UTC timestamps.
pub fn check_value(col: &Column, v: &Value) -> Result<(), String> {
    if v.is_null() {
        return if col.required {
            Err(format!("'{}' is required and cannot be null", col.name))
        } else {
            Ok(())
        };
    }
    let ok = match col.ty {
        ColumnType::Text => v.is_string(),
        ColumnType::Integer | ColumnType::Money => v.is_i64(),
        ColumnType::Boolean => v.is_boolean(),
        ColumnType::Timestamp => match v.as_str() {
            Some(s) => {
                return match chrono::DateTime::parse_from_rfc3339(s) {
                    Ok(t) if t.offset().local_minus_utc() == 0 => Ok(()),
                    Ok(_) => Err(format!(
                        "'{}' must be a UTC timestamp (ending in Z), got '{s}'",
                        col.name
                    )),
                    Err(_) => Err(format!(
                        "'{}' must be an RFC 3339 UTC timestamp, got '{s}'",
                        col.name
                    )),
                };
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
}
