//! Small SQL helpers: JSON <-> SQLite values, reading rows by schema, `_meta` access.

use capsule_protocol::schema::ID_FIELD;
use capsule_protocol::{ColumnType, Row, TableDef};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::{Result, StoreError};

/// Quotes an identifier; schema names are checked identifiers already, this is belt and braces.
pub fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn to_sql(ty: Option<ColumnType>, v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        other => {
            debug_assert!(ty.is_none(), "validated values are scalars");
            SqlValue::Text(other.to_string())
        }
    }
}

/// [`to_sql`] borrowing the JSON's text instead of copying it: what a row write binds (a
/// write binds every column of its row).
pub fn to_sql_ref(ty: Option<ColumnType>, v: &Value) -> ToSqlOutput<'_> {
    match v {
        Value::String(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        other => ToSqlOutput::Owned(to_sql(ty, other)),
    }
}

pub fn from_sql(ty: Option<ColumnType>, v: ValueRef<'_>) -> Result<Value> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) if ty == Some(ColumnType::Boolean) => Value::Bool(i != 0),
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => Value::from(f),
        ValueRef::Text(t) => Value::String(
            std::str::from_utf8(t)
                .map_err(|e| StoreError::Corrupt(format!("text is not UTF-8: {e}")))?
                .to_string(),
        ),
        ValueRef::Blob(_) => return Err(StoreError::Corrupt("unexpected blob".into())),
    })
}

/// The SQL columns a table has (worked out once, when the schema loaded).
pub fn sql_columns(t: &TableDef) -> &[(String, Option<ColumnType>)] {
    &t.stored
}

/// Reads rows of `t` with every SQL column, `WHERE <where_sql>`.
pub fn select_rows(
    conn: &Connection,
    t: &TableDef,
    where_sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for_each_row(conn, t, where_sql, args, |row| {
        out.push(row);
        Ok(())
    })?;
    Ok(out)
}

/// Writes the rows of `t` `WHERE <where_sql>` as JSON objects separated by commas (the JSON
/// of [`select_rows`]' rows), straight from SQLite's values: no row is built as a map, and
/// rows are encoded into a local buffer handed on in blocks of [`ROWS_BLOCK`] bytes, so a
/// day's snapshot streams at the speed of the disk (a write call per value took a third of
/// the time).
pub fn write_rows_json(
    conn: &Connection,
    t: &TableDef,
    where_sql: &str,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let io = |e: std::io::Error| StoreError::Storage(format!("writing rows: {e}"));
    let cols = sql_columns(t);
    // `{"id":`, `,"name":`, ...: each key written once per row from ready bytes.
    let keys: Vec<Vec<u8>> = cols
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let mut k = if i == 0 { b"{".to_vec() } else { b",".to_vec() };
            json_string(&mut k, name);
            k.push(b':');
            k
        })
        .collect();
    let mut stmt = conn.prepare_cached(&t.select_where(where_sql))?;
    let mut rows = stmt.query([])?;
    let mut buf: Vec<u8> = Vec::with_capacity(ROWS_BLOCK + 4096);
    let mut ints = itoa::Buffer::new();
    let mut first = true;
    while let Some(r) = rows.next()? {
        if !first {
            buf.push(b',');
        }
        first = false;
        for (i, (_, ty)) in cols.iter().enumerate() {
            buf.extend_from_slice(&keys[i]);
            match r.get_ref(i)? {
                ValueRef::Null => buf.extend_from_slice(b"null"),
                ValueRef::Integer(v) if *ty == Some(ColumnType::Boolean) => {
                    buf.extend_from_slice(if v != 0 { b"true" } else { b"false" })
                }
                ValueRef::Integer(v) => buf.extend_from_slice(ints.format(v).as_bytes()),
                ValueRef::Real(f) => {
                    serde_json::to_writer(&mut buf, &f).map_err(|e| io(e.into()))?
                }
                ValueRef::Text(text) => json_string(
                    &mut buf,
                    std::str::from_utf8(text)
                        .map_err(|e| StoreError::Corrupt(format!("text is not UTF-8: {e}")))?,
                ),
                ValueRef::Blob(_) => return Err(StoreError::Corrupt("unexpected blob".into())),
            }
        }
        buf.push(b'}');
        if buf.len() >= ROWS_BLOCK {
            out.write_all(&buf).map_err(io)?;
            buf.clear();
        }
    }
    out.write_all(&buf).map_err(io)?;
    Ok(())
}

/// Bytes of encoded rows handed on at a time by [`write_rows_json`].
const ROWS_BLOCK: usize = 32 * 1024;

/// Appends `s` as a JSON string. Most text (ids, times, names) needs no escaping and is copied
/// as it is; the rest goes through serde_json's escaper.
pub(crate) fn json_string(out: &mut Vec<u8>, s: &str) {
    // Without early exit, so the check runs over many bytes at once.
    let plain = !s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
    }
}

/// Hands each row of `t` `WHERE <where_sql>` to `f` as it is read (a table too big to hold).
pub fn for_each_row(
    conn: &Connection,
    t: &TableDef,
    where_sql: &str,
    args: &[&dyn rusqlite::ToSql],
    f: impl FnMut(Row) -> Result<()>,
) -> Result<()> {
    rows_of(conn, t, &t.select_where(where_sql), args, f)
}

/// Runs `sql`, a SELECT of `t`'s stored columns, and hands each row to `f` as a map.
fn rows_of(
    conn: &Connection,
    t: &TableDef,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    mut f: impl FnMut(Row) -> Result<()>,
) -> Result<()> {
    let cols = sql_columns(t);
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    while let Some(r) = rows.next()? {
        let mut row = Row::new();
        for (i, (name, ty)) in cols.iter().enumerate() {
            row.insert(name.clone(), from_sql(*ty, r.get_ref(i)?)?);
        }
        f(row)?;
    }
    Ok(())
}

pub fn select_by_id(conn: &Connection, t: &TableDef, id: &str) -> Result<Option<Row>> {
    let mut found = None;
    rows_of(conn, t, &t.select_by_id_sql, &[&id], |row| {
        found = Some(row);
        Ok(())
    })?;
    Ok(found)
}

/// Reads just `cols` of row `id` of `t`, and the id: a derivation that needs a few columns of a
/// wide row (an order has 33) builds a map of those, not of all of them, on the hub's one
/// writer thread.
pub fn select_columns_by_id(
    conn: &Connection,
    t: &TableDef,
    id: &str,
    cols: &[&str],
) -> Result<Option<Row>> {
    // Built by appending, as in update_columns: the names are the schema's checked identifiers.
    let mut sql = String::with_capacity(40 + 20 * cols.len());
    sql.push_str("SELECT ");
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('"');
        sql.push_str(c);
        sql.push('"');
    }
    sql.push_str(" FROM \"");
    sql.push_str(&t.name);
    sql.push_str("\" WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let mut row = Row::new();
    row.insert(ID_FIELD.into(), Value::String(id.to_string()));
    for (i, c) in cols.iter().enumerate() {
        let ty = t.column(c).map(|col| col.ty);
        row.insert((*c).to_string(), from_sql(ty, r.get_ref(i)?)?);
    }
    Ok(Some(row))
}

/// Inserts or replaces a row given as JSON; keys not in `sql_columns` are ignored, and a
/// column the row leaves out gets what the table's DDL would give it (NULL, or 0 for a
/// version column), so every row is written by one prepared statement per table.
pub fn upsert_row(conn: &Connection, t: &TableDef, row: &Row) -> Result<()> {
    let values = sql_columns(t).iter().map(|(n, ty)| match (row.get(n), ty) {
        (Some(v), _) => to_sql_ref(*ty, v),
        (None, None) => ToSqlOutput::Owned(SqlValue::Integer(0)),
        (None, Some(_)) => ToSqlOutput::Owned(SqlValue::Null),
    });
    conn.prepare_cached(&t.upsert_sql)?
        .execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

/// Updates the given columns of row `id`.
pub fn update_columns(
    conn: &Connection,
    t: &TableDef,
    id: &str,
    set: &[(String, Option<ColumnType>, Value)],
) -> Result<()> {
    if set.is_empty() {
        return Ok(());
    }
    // Built by appending (no format machinery, no allocation per name): this runs for
    // every derived value a write moves.
    let mut sql = String::with_capacity(64 + 24 * set.len());
    sql.push_str("UPDATE \"");
    sql.push_str(&t.name);
    sql.push_str("\" SET ");
    for (i, (n, _, _)) in set.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('"');
        sql.push_str(n);
        sql.push_str("\" = ?");
        sql.push_str(itoa::Buffer::new().format(i + 2));
    }
    sql.push_str(" WHERE id = ?1");
    let mut values = vec![ToSqlOutput::Borrowed(ValueRef::Text(id.as_bytes()))];
    values.extend(set.iter().map(|(_, ty, v)| to_sql_ref(*ty, v)));
    conn.prepare_cached(&sql)?
        .execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

/// The SQL condition of an entity's light filter (`"status" IN ('open', 'sent')`), None when it
/// has none. The light snapshot selects with it and a partial index is built on it, so the
/// text must be the same in both: SQLite uses the index only for that exact condition.
pub fn light_condition(e: &capsule_protocol::Entity) -> Option<String> {
    let l = e.light.as_ref()?;
    let values: Vec<String> = l
        .values
        .iter()
        .map(|v| format!("'{}'", v.replace('\'', "''")))
        .collect();
    Some(format!("\"{}\" IN ({})", l.column, values.join(", ")))
}

/// A `_meta` value, None when unset.
pub fn meta_text(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM _meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub fn meta_i64(conn: &Connection, key: &str) -> Result<i64> {
    meta_text(conn, key)?
        .map(|s| {
            s.parse::<i64>()
                .map_err(|e| StoreError::Corrupt(format!("_meta {key}: {e}")))
        })
        .transpose()
        .map(|v| v.unwrap_or(0))
}

pub fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// Reads an integer column of a JSON row (0 when null or absent).
pub fn int(row: &Row, col: &str) -> i64 {
    row.get(col).and_then(Value::as_i64).unwrap_or(0)
}

pub fn text<'a>(row: &'a Row, col: &str) -> Option<&'a str> {
    row.get(col).and_then(Value::as_str)
}
