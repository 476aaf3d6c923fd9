//! The schema model: synced tables, entities and their parts, loaded once from TOML and checked.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Value, json};

/// The schema shipped with the product (`schema/capsule-schema.toml`).
pub const BUILTIN_SCHEMA_TOML: &str = include_str!("../../../schema/capsule-schema.toml");

/// Name of the implicit primary key of every synced table.
pub const ID_FIELD: &str = "id";
/// Name of the implicit version column of every synced table.
pub const VERSION_COLUMN: &str = "_v";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("schema is inconsistent: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Text,
    Integer,
    /// Integer minor units (halalas, cents). Never a float.
    Money,
    /// RFC 3339 text in UTC, stored in one canonical form: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    Timestamp,
    Boolean,
    /// Text limited to the column's `values`.
    Enum,
}

impl ColumnType {
    pub fn sql_type(self) -> &'static str {
        match self {
            ColumnType::Text | ColumnType::Timestamp | ColumnType::Enum => "TEXT",
            ColumnType::Integer | ColumnType::Money | ColumnType::Boolean => "INTEGER",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub derived: bool,
    /// Build an SQLite index on this column (for lookups the core does, such as jobs by batch).
    #[serde(default)]
    pub index: bool,
    /// A value a write gives may not be another row's (refused 409 naming the column); a
    /// value the core fills in itself is not checked. Needs `index = true`.
    #[serde(default)]
    pub unique: bool,
    /// The entity table whose row this column names by id: a write naming a row that does
    /// not exist is refused (424 while it may still be on its way, 409 once deleted).
    #[serde(default)]
    pub references: Option<String>,
    #[serde(default)]
    pub default: Option<toml::Value>,
    /// Smallest accepted value of an integer or money column (required on writable ones).
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest accepted value of an integer or money column (required on writable ones).
    #[serde(default)]
    pub max: Option<i64>,
    /// Longest accepted text in bytes (required on writable text columns).
    #[serde(default)]
    pub max_len: Option<usize>,
    #[serde(default)]
    pub doc: Option<String>,
}

impl Column {
    /// The column's default as JSON (`null` when it has none).
    pub fn default_json(&self) -> Value {
        match &self.default {
            None => Value::Null,
            Some(toml::Value::String(s)) => Value::String(s.clone()),
            Some(toml::Value::Integer(i)) => json!(i),
            Some(toml::Value::Boolean(b)) => json!(b),
            Some(other) => Value::String(other.to_string()),
        }
    }
}

/// Where a table sits in the entity model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableRole {
    /// The main table of an entity: one row per entity id.
    Entity { entity: String },
    /// Rows owned by a parent entity and synced whole as one of its parts.
    Child {
        entity: String,
        part: String,
        parent_field: String,
    },
}

impl TableRole {
    /// The entity whose rows the table holds.
    pub fn entity(&self) -> &str {
        match self {
            TableRole::Entity { entity } | TableRole::Child { entity, .. } => entity,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub doc: Option<String>,
    pub columns: Vec<Column>,
    pub role: TableRole,
    /// Child tables: most rows one parent may hold, so one entity's derived state stays cheap
    /// to recompute and one client cannot grow an order without bound.
    pub max_per_parent: Option<usize>,
    /// Rows are only ever inserted (a Z report): merges, saves over a row and deletes are
    /// refused.
    pub immutable: bool,
    /// Indexes over several columns, in order (a search that filters by the first and pages
    /// by the next walks the index instead of sorting what it found).
    pub indexes: Vec<Vec<String>>,
    /// Every column the table stores, in order: `id`, the schema columns, then the version
    /// columns (an entity table's `_v` and `_v_<part>`, a child table's `_v`). Worked out
    /// once when the schema loads, because every read and write of a row walks it.
    pub stored: Vec<(String, Option<ColumnType>)>,
    /// `"id", "col", ...`: the quoted `stored` list, ready for a SELECT.
    pub stored_list: String,
    /// `SELECT <stored> FROM <t> WHERE id = ?1`: read for every row a write touches, so
    /// built once here rather than formatted per read.
    pub select_by_id_sql: String,
    /// `INSERT OR REPLACE INTO <t> (<stored>) VALUES (?1, ...)`: one statement for every row
    /// written whole (a column the row leaves out is bound to its default).
    pub upsert_sql: String,
}

impl TableDef {
    /// `SELECT <stored> FROM <t> WHERE <where_sql> ORDER BY rowid`: every read of whole rows.
    pub fn select_where(&self, where_sql: &str) -> String {
        format!(
            "SELECT {} FROM \"{}\" WHERE {where_sql} ORDER BY rowid",
            self.stored_list, self.name
        )
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// What a client needs to build a valid write: every column with its type, whether the
    /// core derives it (not writable), whether an insert needs it, its range and default.
    pub fn to_api_json(&self) -> Value {
        let mut columns = vec![
            json!({"name": ID_FIELD, "type": ColumnType::Text, "required": true,
                                      "derived": false, "max_len": crate::validate::MAX_ID_LEN}),
        ];
        for c in &self.columns {
            let mut col =
                json!({"name": c.name, "type": c.ty, "required": c.required, "derived": c.derived});
            let extra = [
                ("min", c.min.map(|v| json!(v))),
                ("max", c.max.map(|v| json!(v))),
                ("max_len", c.max_len.map(|v| json!(v))),
                ("values", (!c.values.is_empty()).then(|| json!(c.values))),
                ("default", c.default.as_ref().map(|_| c.default_json())),
                ("unique", c.unique.then_some(json!(true))),
                ("references", c.references.as_ref().map(|r| json!(r))),
                ("doc", c.doc.as_ref().map(|d| json!(d))),
            ];
            for (k, v) in extra {
                if let Some(v) = v {
                    col[k] = v;
                }
            }
            columns.push(col);
        }
        let mut t = json!({"columns": columns});
        if let Some(d) = &self.doc {
            t["doc"] = json!(d);
        }
        if let Some(m) = self.max_per_parent {
            t["max_per_parent"] = json!(m);
        }
        if self.immutable {
            t["immutable"] = json!(true);
        }
        t
    }

    /// Column names in declaration order, `id` first.
    pub fn column_names(&self) -> Vec<&str> {
        std::iter::once(ID_FIELD)
            .chain(self.columns.iter().map(|c| c.name.as_str()))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartKind {
    /// Columns of the entity's own row.
    Columns(Vec<String>),
    /// All rows of a child table whose `parent_field` is the entity id.
    Child { table: String, parent_field: String },
}

#[derive(Debug, Clone)]
pub struct Part {
    pub name: String,
    pub kind: PartKind,
}

impl Part {
    /// The name of the replica/hub column that stores this part's version.
    pub fn version_column(&self) -> String {
        format!("_v_{}", self.name)
    }
}

/// Which rows of an entity a light snapshot carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LightFilter {
    pub column: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Entity {
    pub name: String,
    pub table: String,
    pub id_field: String,
    /// Rows a light snapshot carries; None means all of them.
    pub light: Option<LightFilter>,
    /// Served to the shop's nodes only, never to a screen (the staff PIN hashes): not in the
    /// screens' working set, refused to a screen's pull.
    pub secret: bool,
    /// Parts in a stable (alphabetical) order.
    pub parts: Vec<Part>,
}

impl Entity {
    pub fn part(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }

    pub fn part_names(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.name.clone()).collect()
    }

    /// The part a column of the entity's own table belongs to.
    pub fn part_of_column(&self, column: &str) -> Option<&Part> {
        self.parts.iter().find(
            |p| matches!(&p.kind, PartKind::Columns(cols) if cols.iter().any(|c| c == column)),
        )
    }

    /// Parses a `parts=a,b` list; `None` or empty means every part. Unknown names are an error
    /// naming the first one and the parts that exist.
    pub fn parse_parts(&self, list: Option<&str>) -> Result<Vec<String>, String> {
        self.parse_part_list(list.into_iter().flat_map(|l| l.split(',')))
    }

    /// [`Entity::parse_parts`] for names already apart (a `POST /api/pull` body's list):
    /// trimmed, blanks skipped, repeats once, none means every part.
    pub fn parse_part_list<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, String> {
        let requested: Vec<&str> = names
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if requested.is_empty() {
            return Ok(self.part_names());
        }
        let mut out = Vec::new();
        for name in requested {
            if self.part(name).is_none() {
                return Err(format!(
                    "entity '{}' has no part '{}' (parts: {})",
                    self.name,
                    name,
                    self.part_names().join(", ")
                ));
            }
            if !out.iter().any(|p| p == name) {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone)]
pub struct Schema {
    pub tables: BTreeMap<String, TableDef>,
    pub entities: BTreeMap<String, Entity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchema {
    tables: BTreeMap<String, RawTable>,
    entities: BTreeMap<String, RawEntity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    doc: Option<String>,
    #[serde(default)]
    immutable: bool,
    #[serde(default)]
    max_per_parent: Option<usize>,
    #[serde(default)]
    indexes: Vec<Vec<String>>,
    columns: Vec<Column>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntity {
    table: String,
    id_field: String,
    #[serde(default)]
    light: Option<LightFilter>,
    #[serde(default)]
    secret: bool,
    parts: BTreeMap<String, RawPart>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPart {
    Columns(Vec<String>),
    Child { child: String, parent_field: String },
}

/// Every value a client can write has a declared range: integers and money a `min` and `max`,
/// text a `max_len`. Derived columns are bounded by the rules that compute them.
fn check_bounds(table: &str, c: &Column) -> Result<(), SchemaError> {
    let numeric = matches!(c.ty, ColumnType::Integer | ColumnType::Money);
    let at = format!("{table}.{}", c.name);
    if !numeric && (c.min.is_some() || c.max.is_some()) {
        return Err(invalid(format!(
            "column '{at}': min and max go with integer and money columns"
        )));
    }
    if c.ty != ColumnType::Text && c.max_len.is_some() {
        return Err(invalid(format!(
            "column '{at}': max_len goes with text columns"
        )));
    }
    if c.derived {
        return Ok(());
    }
    match c.ty {
        ColumnType::Integer | ColumnType::Money => match (c.min, c.max) {
            (Some(lo), Some(hi)) if lo <= hi => Ok(()),
            (Some(_), Some(_)) => Err(invalid(format!("column '{at}': min is above max"))),
            _ => Err(invalid(format!(
                "writable column '{at}' must declare its range (min and max)"
            ))),
        },
        ColumnType::Text => match c.max_len {
            Some(n) if n > 0 => Ok(()),
            _ => Err(invalid(format!(
                "writable text column '{at}' must declare max_len (at least 1)"
            ))),
        },
        _ => Ok(()),
    }
}

fn invalid(msg: impl Into<String>) -> SchemaError {
    SchemaError::Invalid(msg.into())
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit() || c == '_')
}

/// The columns `t` stores: see [`TableDef::stored`].
fn stored_columns(
    entities: &BTreeMap<String, Entity>,
    t: &TableDef,
) -> Vec<(String, Option<ColumnType>)> {
    let mut cols = vec![(ID_FIELD.to_string(), Some(ColumnType::Text))];
    cols.extend(t.columns.iter().map(|c| (c.name.clone(), Some(c.ty))));
    cols.push((VERSION_COLUMN.to_string(), None));
    // A child row's `_v` is the hub version that last wrote it, so a puller holding the part
    // at some version gets only the rows changed since.
    if let TableRole::Entity { entity } = &t.role {
        for p in &entities[entity].parts {
            cols.push((p.version_column(), None));
        }
    }
    cols
}

impl Schema {
    /// The schema shipped with the product.
    pub fn builtin() -> Schema {
        Schema::from_toml(BUILTIN_SCHEMA_TOML).expect("the built-in schema is valid (tested)")
    }

    /// Parses and checks a schema. Every rule the rest of the code relies on is checked here,
    /// so a bad schema stops the node at start rather than corrupting data later.
    pub fn from_toml(text: &str) -> Result<Schema, SchemaError> {
        let raw: RawSchema = toml::from_str(text)?;
        let mut roles: BTreeMap<String, TableRole> = BTreeMap::new();
        let mut entities = BTreeMap::new();

        for (name, re) in &raw.entities {
            if !is_identifier(name) {
                return Err(invalid(format!(
                    "entity name '{name}' is not a lower-case identifier"
                )));
            }
            let table = raw.tables.get(&re.table).ok_or_else(|| {
                invalid(format!(
                    "entity '{name}' names unknown table '{}'",
                    re.table
                ))
            })?;
            if re.id_field != ID_FIELD {
                return Err(invalid(format!(
                    "entity '{name}': id_field must be '{ID_FIELD}'"
                )));
            }
            if roles
                .insert(
                    re.table.clone(),
                    TableRole::Entity {
                        entity: name.clone(),
                    },
                )
                .is_some()
            {
                return Err(invalid(format!(
                    "table '{}' belongs to more than one entity",
                    re.table
                )));
            }
            let mut seen_cols: BTreeSet<&str> = BTreeSet::new();
            let mut parts = Vec::new();
            for (pname, rp) in &re.parts {
                if !is_identifier(pname) {
                    return Err(invalid(format!(
                        "part name '{pname}' is not a lower-case identifier"
                    )));
                }
                let kind = match rp {
                    RawPart::Columns(cols) => {
                        for c in cols {
                            if table.columns.iter().all(|col| &col.name != c) {
                                return Err(invalid(format!(
                                    "part '{name}.{pname}' names unknown column '{}.{c}'",
                                    re.table
                                )));
                            }
                            if !seen_cols.insert(c) {
                                return Err(invalid(format!(
                                    "column '{}.{c}' is in more than one part",
                                    re.table
                                )));
                            }
                        }
                        PartKind::Columns(cols.clone())
                    }
                    RawPart::Child {
                        child,
                        parent_field,
                    } => {
                        let ct = raw.tables.get(child).ok_or_else(|| {
                            invalid(format!(
                                "part '{name}.{pname}' names unknown child table '{child}'"
                            ))
                        })?;
                        if ct.columns.iter().all(|c| &c.name != parent_field) {
                            return Err(invalid(format!(
                                "child table '{child}' has no parent field '{parent_field}'"
                            )));
                        }
                        let role = TableRole::Child {
                            entity: name.clone(),
                            part: pname.clone(),
                            parent_field: parent_field.clone(),
                        };
                        if roles.insert(child.clone(), role).is_some() {
                            return Err(invalid(format!(
                                "table '{child}' belongs to more than one entity"
                            )));
                        }
                        PartKind::Child {
                            table: child.clone(),
                            parent_field: parent_field.clone(),
                        }
                    }
                };
                parts.push(Part {
                    name: pname.clone(),
                    kind,
                });
            }
            if let Some(l) = &re.light
                && table.columns.iter().all(|c| c.name != l.column)
            {
                return Err(invalid(format!(
                    "light filter of '{name}' names unknown column '{}'",
                    l.column
                )));
            }
            for col in &table.columns {
                if !seen_cols.contains(col.name.as_str()) {
                    return Err(invalid(format!(
                        "column '{}.{}' belongs to no part of entity '{name}'",
                        re.table, col.name
                    )));
                }
            }
            entities.insert(
                name.clone(),
                Entity {
                    name: name.clone(),
                    table: re.table.clone(),
                    id_field: re.id_field.clone(),
                    light: re.light.clone(),
                    secret: re.secret,
                    parts,
                },
            );
        }

        let mut tables = BTreeMap::new();
        for (name, rt) in raw.tables {
            if !is_identifier(&name) {
                return Err(invalid(format!(
                    "table name '{name}' is not a lower-case identifier"
                )));
            }
            let role = roles
                .remove(&name)
                .ok_or_else(|| invalid(format!("table '{name}' belongs to no entity")))?;
            let mut names = BTreeSet::new();
            for c in &rt.columns {
                if !is_identifier(&c.name) || c.name == ID_FIELD {
                    return Err(invalid(format!(
                        "column name '{name}.{}' is reserved or not an identifier",
                        c.name
                    )));
                }
                if !names.insert(c.name.as_str()) {
                    return Err(invalid(format!(
                        "column '{name}.{}' is declared twice",
                        c.name
                    )));
                }
                if (c.ty == ColumnType::Enum) == c.values.is_empty() {
                    return Err(invalid(format!(
                        "column '{name}.{}': values go with type enum, and only there",
                        c.name
                    )));
                }
                if c.required && c.derived {
                    return Err(invalid(format!(
                        "column '{name}.{}' cannot be both required and derived",
                        c.name
                    )));
                }
                check_bounds(&name, c)?;
                if c.unique && !c.index {
                    return Err(invalid(format!(
                        "column '{name}.{}' is unique, so it needs index = true",
                        c.name
                    )));
                }
                if c.references.is_some() && c.ty != ColumnType::Text {
                    return Err(invalid(format!(
                        "column '{name}.{}' references a row by id, so it is text",
                        c.name
                    )));
                }
                if let Some(d) = &c.default {
                    crate::validate::check_value(c, &c.default_json()).map_err(|e| {
                        invalid(format!(
                            "default of '{name}.{}' ({d}) is not valid: {e}",
                            c.name
                        ))
                    })?;
                }
            }
            let is_child = matches!(role, TableRole::Child { .. });
            match rt.max_per_parent {
                Some(0) => {
                    return Err(invalid(format!(
                        "table '{name}': max_per_parent must be at least 1"
                    )));
                }
                Some(_) if !is_child => {
                    return Err(invalid(format!(
                        "table '{name}' is no child table, so max_per_parent does not apply"
                    )));
                }
                None if is_child => {
                    return Err(invalid(format!(
                        "child table '{name}' must declare max_per_parent"
                    )));
                }
                _ => {}
            }
            for cols in &rt.indexes {
                if cols.len() < 2 {
                    return Err(invalid(format!(
                        "table '{name}': an entry of indexes names at least 2 columns (one column: index = true)"
                    )));
                }
                if let Some(c) = cols
                    .iter()
                    .find(|c| !rt.columns.iter().any(|k| &k.name == *c))
                {
                    return Err(invalid(format!(
                        "table '{name}': indexes names unknown column '{c}'"
                    )));
                }
            }
            tables.insert(
                name.clone(),
                TableDef {
                    name,
                    doc: rt.doc,
                    columns: rt.columns,
                    role,
                    max_per_parent: rt.max_per_parent,
                    immutable: rt.immutable,
                    indexes: rt.indexes,
                    stored: Vec::new(),
                    stored_list: String::new(),
                    select_by_id_sql: String::new(),
                    upsert_sql: String::new(),
                },
            );
        }
        for t in tables.values() {
            for c in &t.columns {
                if let Some(r) = &c.references
                    && !tables
                        .get(r)
                        .is_some_and(|rt| matches!(rt.role, TableRole::Entity { .. }))
                {
                    return Err(invalid(format!(
                        "column '{}.{}' references '{r}', which is no entity's table",
                        t.name, c.name
                    )));
                }
            }
        }
        for t in tables.values_mut() {
            t.stored = stored_columns(&entities, t);
            t.stored_list = t
                .stored
                .iter()
                .map(|(n, _)| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ");
            t.select_by_id_sql = t.select_where("id = ?1");
            let marks: Vec<String> = (1..=t.stored.len()).map(|i| format!("?{i}")).collect();
            t.upsert_sql = format!(
                "INSERT OR REPLACE INTO \"{}\" ({}) VALUES ({})",
                t.name,
                t.stored_list,
                marks.join(", ")
            );
        }
        Ok(Schema { tables, entities })
    }

    pub fn entity(&self, name: &str) -> Option<&Entity> {
        self.entities.get(name)
    }

    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.get(name)
    }

    /// Tables in an order where a parent's table comes before its children's.
    pub fn tables_parent_first(&self) -> Vec<&TableDef> {
        let mut out: Vec<&TableDef> = self
            .tables
            .values()
            .filter(|t| matches!(t.role, TableRole::Entity { .. }))
            .collect();
        out.extend(
            self.tables
                .values()
                .filter(|t| matches!(t.role, TableRole::Child { .. })),
        );
        out
    }

    /// The `GET /api/schema` document:
    /// `{"entities": {"<entity>": {"table", "id_field", "parts": {"<part>": [cols]}, "children": {...}}}}`.
    /// A child-backed part lists the child table's columns, and `children` says which table
    /// and parent field back it.
    pub fn to_api_json(&self) -> Value {
        let mut entities = serde_json::Map::new();
        for e in self.entities.values() {
            let mut parts = serde_json::Map::new();
            let mut children = serde_json::Map::new();
            for p in &e.parts {
                match &p.kind {
                    PartKind::Columns(cols) => {
                        parts.insert(p.name.clone(), json!(cols));
                    }
                    PartKind::Child {
                        table,
                        parent_field,
                    } => {
                        let cols = self.tables[table].column_names();
                        parts.insert(p.name.clone(), json!(cols));
                        children.insert(
                            p.name.clone(),
                            json!({"table": table, "parent_field": parent_field}),
                        );
                    }
                }
            }
            let mut ent = json!({"table": e.table, "id_field": e.id_field, "parts": parts});
            if !children.is_empty() {
                ent["children"] = Value::Object(children);
            }
            entities.insert(e.name.clone(), ent);
        }
        let tables: serde_json::Map<String, Value> = self
            .tables
            .values()
            .map(|t| (t.name.clone(), t.to_api_json()))
            .collect();
        json!({ "entities": entities, "tables": tables })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schema_declares_the_issue_entities_and_parts() {
        let s = Schema::builtin();
        let want = [
            (
                "order",
                "order_header",
                &["header", "status", "totals", "lines"][..],
            ),
            ("job", "job_order_header", &["status", "progress"][..]),
            ("batch", "job_order_batch", &["status", "handoff"][..]),
            ("shift", "pos_shift", &["status", "totals"][..]),
        ];
        for (entity, table, parts) in want {
            let e = s
                .entity(entity)
                .unwrap_or_else(|| panic!("entity {entity} missing"));
            assert_eq!(e.table, table);
            for p in parts {
                assert!(e.part(p).is_some(), "{entity} lacks part {p}");
            }
        }
        assert!(matches!(
            s.table("order_line").unwrap().role,
            TableRole::Child { ref entity, ref part, .. } if entity == "order" && part == "lines"
        ));
    }

    #[test]
    fn api_json_has_the_documented_shape() {
        let j = Schema::builtin().to_api_json();
        assert_eq!(j["entities"]["order"]["table"], "order_header");
        assert_eq!(j["entities"]["order"]["id_field"], "id");
        let status: Vec<&str> = j["entities"]["order"]["parts"]["status"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            status,
            [
                "status",
                "updated_at",
                "closed_at",
                "finished_v",
                "void_reason"
            ]
        );
        let finished = j["tables"]["order_header"]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "finished_v")
            .unwrap();
        assert_eq!(finished["derived"], true);
        assert_eq!(j["tables"]["z_report"]["immutable"], true);
        assert_eq!(
            j["entities"]["order"]["children"]["lines"]["table"],
            "order_line"
        );
        assert!(
            j["entities"]["order"]["parts"]["lines"]
                .as_array()
                .unwrap()
                .contains(&json!("qty"))
        );
    }

    #[test]
    fn a_column_in_no_part_is_rejected() {
        let text = BUILTIN_SCHEMA_TOML.replace(
            r#"progress = ["items_total", "items_done"]"#,
            r#"progress = ["items_total"]"#,
        );
        let err = Schema::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains("items_done") && err.contains("no part"),
            "{err}"
        );
    }

    #[test]
    fn a_column_in_two_parts_is_rejected() {
        let text = BUILTIN_SCHEMA_TOML.replace(
            r#"progress = ["items_total", "items_done"]"#,
            r#"progress = ["items_total", "items_done", "status"]"#,
        );
        let err = Schema::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("more than one part"), "{err}");
    }

    #[test]
    fn parse_parts_defaults_to_all_and_names_unknown_parts() {
        let s = Schema::builtin();
        let order = s.entity("order").unwrap();
        assert_eq!(order.parse_parts(None).unwrap(), order.part_names());
        assert_eq!(
            order.parse_parts(Some("status,totals,status")).unwrap(),
            ["status", "totals"]
        );
        let err = order.parse_parts(Some("status,colour")).unwrap_err();
        assert!(err.contains("'colour'") && err.contains("totals"), "{err}");
    }

    #[test]
    fn every_writable_value_declares_its_range() {
        let unbounded = BUILTIN_SCHEMA_TOML.replace(
            r#"{ name = "qty", type = "integer", min = 1, max = 10_000, required = true },"#,
            r#"{ name = "qty", type = "integer", required = true },"#,
        );
        assert_ne!(unbounded, BUILTIN_SCHEMA_TOML);
        let err = Schema::from_toml(&unbounded).unwrap_err().to_string();
        assert!(err.contains("qty") && err.contains("range"), "{err}");

        let long =
            BUILTIN_SCHEMA_TOML.replacen(r#"type = "text", max_len = 500"#, r#"type = "text""#, 1);
        let err = Schema::from_toml(&long).unwrap_err().to_string();
        assert!(err.contains("max_len"), "{err}");

        let no_cap = BUILTIN_SCHEMA_TOML.replace("max_per_parent = 500\n", "");
        let err = Schema::from_toml(&no_cap).unwrap_err().to_string();
        assert!(err.contains("max_per_parent"), "{err}");

        let bad_default = BUILTIN_SCHEMA_TOML.replace(
            r#"min = 0, max = 999, default = 1"#,
            r#"min = 0, max = 999, default = 1000"#,
        );
        let err = Schema::from_toml(&bad_default).unwrap_err().to_string();
        assert!(err.contains("guests"), "{err}");
    }
}
