//! Loads a snapshot as it is read (from a hub's HTTP answer), one row at a time into one
//! transaction: a node joining a shop with years of history holds a row in memory, never the
//! whole snapshot (which at a million orders is gigabytes of JSON).

use std::fmt;
use std::io::Read;

use capsule_protocol::Row;
use rusqlite::{Connection, TransactionBehavior};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::{Result, Store, StoreError};

/// What the loader needs before the first row: a hub writes these keys first.
#[derive(Default)]
struct Header {
    node_id: Option<String>,
    seq: Option<i64>,
    v: Option<i64>,
    /// Absent from a hub too old to say: it always sent every row asked for.
    scope: Option<String>,
}

struct Loader<'a> {
    store: &'a Store,
    tx: &'a Connection,
    header: Header,
    began: bool,
    /// The first storage error, kept whole (serde's errors are text).
    failed: Option<StoreError>,
    rows: u64,
}

impl Loader<'_> {
    fn store_err<E: de::Error>(&mut self, e: StoreError) -> E {
        let text = e.to_string();
        self.failed.get_or_insert(e);
        E::custom(text)
    }
}

impl<'de> DeserializeSeed<'de> for &mut Loader<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut Loader<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a snapshot object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "node_id" => self.header.node_id = Some(map.next_value()?),
                "seq" => self.header.seq = Some(map.next_value()?),
                "v" => self.header.v = Some(map.next_value()?),
                "scope" => self.header.scope = Some(map.next_value()?),
                "tables" => {
                    let (Some(node_id), Some(v)) = (self.header.node_id.clone(), self.header.v)
                    else {
                        return Err(de::Error::custom(
                            "snapshot tables came before its node_id and v",
                        ));
                    };
                    if let Err(e) = self.store.snapshot_begin(self.tx, &node_id, v) {
                        return Err(self.store_err(e));
                    }
                    self.began = true;
                    map.next_value_seed(Tables(&mut *self))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The `tables` object: table name -> its rows.
struct Tables<'l, 'a>(&'l mut Loader<'a>);

impl<'de> DeserializeSeed<'de> for Tables<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Tables<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of tables")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(table) = map.next_key::<String>()? {
            if let Err(e) = self.0.store.snapshot_table(self.0.tx, &table) {
                return Err(self.0.store_err(e));
            }
            seen.insert(table.clone());
            map.next_value_seed(Rows {
                loader: &mut *self.0,
                table,
            })?;
        }
        // A table the snapshot does not name holds nothing at the hub.
        for t in self.0.store.schema.tables.keys() {
            if !seen.contains(t)
                && let Err(e) = self.0.store.snapshot_table(self.0.tx, t)
            {
                return Err(self.0.store_err(e));
            }
        }
        Ok(())
    }
}

/// One table's array of rows, written as each is read.
struct Rows<'l, 'a> {
    loader: &'l mut Loader<'a>,
    table: String,
}

impl<'de> DeserializeSeed<'de> for Rows<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Rows<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while let Some(row) = seq.next_element::<Row>()? {
            if let Err(e) = self
                .loader
                .store
                .snapshot_row(self.loader.tx, &self.table, &row)
            {
                return Err(self.loader.store_err(e));
            }
            self.loader.rows += 1;
        }
        Ok(())
    }
}

impl Store {
    /// Replaces every synced row with the snapshot read from `reader` (the JSON document
    /// `/api/snapshot` serves), row by row in one transaction: all of it or, on any error
    /// (a cut connection, a bad row), nothing. Returns the snapshot's (seq, v).
    pub fn load_snapshot_from(&self, reader: impl Read) -> Result<(i64, i64)> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut loader = Loader {
            store: self,
            tx: &tx,
            header: Header::default(),
            began: false,
            failed: None,
            rows: 0,
        };
        let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
            64 * 1024,
            reader,
        ));
        let parsed = (&mut loader).deserialize(&mut de).and_then(|()| de.end());
        if let Err(e) = parsed {
            return Err(loader.failed.take().unwrap_or_else(|| {
                StoreError::Invalid(format!("a snapshot that cannot be read: {e}"))
            }));
        }
        let (Some(node_id), Some(seq), Some(v), true) = (
            loader.header.node_id.take(),
            loader.header.seq,
            loader.header.v,
            loader.began,
        ) else {
            return Err(StoreError::Invalid(
                "a snapshot without node_id, seq, v or tables".into(),
            ));
        };
        tracing::debug!(rows = loader.rows, "snapshot loaded as it was read");
        let whole = loader.header.scope.as_deref().is_none_or(|s| s == "full");
        self.snapshot_finish(&tx, &node_id, seq, v, whole)?;
        tx.commit()?;
        Ok((seq, v))
    }
}
