//! Wire types: mutations in, capsules and frames out, part pulls and snapshots.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A row as JSON: column name -> value.
pub type Row = Map<String, Value>;

/// The signal the hub broadcasts after a committed change: which parts of which entity moved,
/// and to what version. It never carries row data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capsule {
    pub entity: String,
    pub id: String,
    pub parts: Vec<String>,
    /// Hub version of the change (the mutation's sequence number).
    pub v: i64,
    /// Commit time, ms since the Unix epoch (UTC).
    pub ts: i64,
    /// Node that originated the mutation.
    pub source: String,
    /// The entity row was deleted at `v`; `parts` is empty.
    #[serde(default, skip_serializing_if = "is_false")]
    pub gone: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A WebSocket frame from a node's `/ws` stream.
///
/// Stream positions are the hub's capsule-log sequence numbers. A frame covering log entries
/// `from..=seq` follows one that ended at `from - 1` or later; a subscriber that sees
/// `from > last + 1` has a gap and asks for the missing range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    /// First frame on every connection.
    Hello {
        node_id: String,
        role: String,
        /// Stream position when this connection started (before any replay).
        seq: i64,
        /// Current hub version.
        v: i64,
        /// Oldest position the hub can still replay from (`since` >= oldest - 1 works).
        #[serde(default)]
        oldest: i64,
        /// The hub's term and where it came from: stream positions mean something only within
        /// one hub and term.
        #[serde(default, flatten)]
        lineage: Lineage,
    },
    /// One capsule at stream position `seq` (coalescing off).
    Capsule { seq: i64, capsule: Capsule },
    /// Capsules of log entries `from..=seq`, coalesced: one item per entity+id, with the union
    /// of their parts and the highest version.
    Capsules {
        seq: i64,
        from: i64,
        items: Vec<Capsule>,
    },
    /// Legacy rollout mode: whole entities (every part) for log entries `from..=seq`, as the
    /// old system pushed them. `ts` is the newest commit time covered.
    Rows {
        seq: i64,
        from: i64,
        ts: i64,
        rows: Vec<BatchPull>,
    },
    /// The subscriber fell too far behind and missed frames; it must resynchronise.
    Lagged { missed: u64 },
    /// `since` is older than the hub's change log reaches; take a snapshot.
    TooOld { oldest: i64 },
    /// A till's local stream only: its data was replaced wholesale (a fresh snapshot); reload.
    Reset { seq: i64 },
}

impl Frame {
    /// The log range a data frame covers.
    pub fn range(&self) -> Option<(i64, i64)> {
        match self {
            Frame::Capsule { seq, .. } => Some((*seq, *seq)),
            Frame::Capsules { seq, from, .. } | Frame::Rows { seq, from, .. } => {
                Some((*from, *seq))
            }
            _ => None,
        }
    }
}

/// How the hub streams an entity (the rollout path from the old full-row system).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Full rows over WS, as the old system did.
    Legacy,
    /// Full rows and capsules in parallel.
    Both,
    /// Signals only; tills pull parts.
    Capsule,
}

impl Mode {
    pub fn sends_rows(self) -> bool {
        matches!(self, Mode::Legacy | Mode::Both)
    }

    pub fn sends_capsules(self) -> bool {
        matches!(self, Mode::Capsule | Mode::Both)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Legacy => "legacy",
            Mode::Both => "both",
            Mode::Capsule => "capsule",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "legacy" => Ok(Mode::Legacy),
            "both" => Ok(Mode::Both),
            "capsule" => Ok(Mode::Capsule),
            other => Err(format!(
                "unknown mode '{other}' (modes: legacy, both, capsule)"
            )),
        }
    }
}

/// `GET /api/changes?since=` answer: capsules of log entries after `since`, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Changes {
    pub since: i64,
    /// Last position included (== since when there is nothing new).
    pub seq: i64,
    pub items: Vec<Capsule>,
    /// More entries follow; ask again from `seq`.
    pub more: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create a row; fails if the id exists.
    Insert,
    /// Patch the given columns of an existing row.
    Merge,
    /// Upsert the whole row.
    Save,
    /// Remove the row (and an entity's child rows).
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Mutation {
    /// Unique mutation id (a UUID); a repeated mid is a harmless retry.
    pub mid: String,
    pub table: String,
    pub action: Action,
    /// Column -> value; a column named twice is refused (JSON would keep the last silently).
    #[serde(deserialize_with = "row_without_duplicate_keys")]
    #[schema(value_type = Object)]
    pub row: Row,
    /// The hub version of the row's entity as the writer saw it (a till fills it from its
    /// replica). Lets the hub tell a stale edit (made before someone else's newer change) from
    /// a deliberate one where last-writer-wins would be wrong: see the store's `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<i64>,
    /// Who made it ([`Actor`]): stamped by the node serving the screen, never taken from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Actor>,
}

/// Who made a write: the staff member logged in on the screen it came from and, for an action
/// their role may not do alone, the manager who approved it there with their own PIN. The
/// node serving the screen stamps it from the screen's staff session (whatever the screen
/// sent is replaced); a paired device forwarding its writes vouches for it, and every node
/// that applies the write checks the permission again (`capsule_store::permits`).
// Unknown fields are ignored, not refused: a newer node's stamp (a field added later) must
// not get its writes set aside by an older hub during a shop's upgrade, one machine at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    /// A `staff` id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff: Option<String>,
    /// The `staff` id of the manager who approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// The one permission the approver approved (an approval is for that, nothing else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<String>,
    /// The node that served the screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// When it was made there (RFC 3339 UTC): a till's offline write keeps the moment the
    /// cashier made it, not the one it reached the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The menu's price of the line's item (per unit, minor units) at the node that served
    /// the screen, when the write was made: a line sold at another price is a price override.
    /// Stamped there, not by the screen, and kept when the write is forwarded, so an honest
    /// sale rung up offline before a price change reached the till is judged by the price the
    /// till showed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub menu_price: Option<i64>,
    /// The menu's price of the line's chosen modifiers (per unit), stamped beside `menu_price`.
    /// Its presence says the serving node priced the line at all (an older node did not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub menu_modifier_price: Option<i64>,
    /// The modifiers (`a; b`) `menu_modifier_price` was read for: a line whose modifiers are
    /// others by the time the write is applied (a write sent beside it) is judged unpriced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub menu_modifiers: Option<String>,
}

/// Reads a JSON object into a [`Row`], refusing a key that appears twice.
fn row_without_duplicate_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Row, D::Error> {
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = Row;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object of column values")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
            let mut row = Row::new();
            while let Some((key, value)) = map.next_entry::<String, Value>()? {
                if row.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!(
                        "column '{key}' appears twice in one row"
                    )));
                }
                row.insert(key, value);
            }
            Ok(row)
        }
    }
    d.deserialize_map(Unique)
}

impl Mutation {
    /// A mutation with a fresh mid (time-ordered, like the UI's), for code that writes (demo data,
    /// workloads).
    ///
    /// # Panics
    /// If `row` is not a JSON object: a programming error in the caller.
    pub fn new(table: &str, action: Action, row: Value) -> Mutation {
        let Value::Object(row) = row else {
            panic!("a mutation's row must be a JSON object, got {row}")
        };
        Mutation {
            mid: uuid::Uuid::now_v7().to_string(),
            table: table.into(),
            action,
            row,
            base: None,
            by: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MutationBatch {
    pub mutations: Vec<Mutation>,
    /// Node the mutations come from (a till forwarding its cashier's writes); defaults to the
    /// receiving node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MutationStatus {
    Applied,
    /// A till committed it locally; the hub has not confirmed it yet (its outbox will).
    Queued,
    /// The mid was applied before; nothing changed this time.
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MutationResult {
    pub mid: String,
    pub status: MutationStatus,
    /// Hub version given to the mutation when it was first applied.
    pub seq: i64,
    /// The hub applied the write only in part (a stale status change dropped by its rules):
    /// the sender re-reads the entity rather than keep showing its own version of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MutationResponse {
    pub results: Vec<MutationResult>,
}

/// `GET /api/entities/:entity/:id` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EntityParts {
    pub entity: String,
    pub id: String,
    pub parts: Vec<String>,
    /// Entity version: the highest version of any of its parts.
    pub v: i64,
    /// Version of each returned part, so a merge can keep a newer local part.
    pub pv: BTreeMap<String, i64>,
    /// Exactly the columns of the requested parts; a child part is an array of child rows
    /// under the part's name.
    #[schema(value_type = Object)]
    pub payload: Row,
}

/// One entity in a batch pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PulledItem {
    pub id: String,
    pub v: i64,
    pub pv: BTreeMap<String, i64>,
    #[schema(value_type = Object)]
    pub payload: Row,
    /// Child parts sent as a delta (the puller said which version it holds): the payload
    /// holds only the child rows changed after that version, and this lists every child id
    /// the part has now, so the puller drops the ones not listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub live: BTreeMap<String, Vec<String>>,
}

/// `GET /api/entities?entity=&ids=&parts=` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchPull {
    pub entity: String,
    pub parts: Vec<String>,
    pub items: Vec<PulledItem>,
    /// Requested ids that do not exist (deleted, or never created).
    pub missing: Vec<String>,
}

/// One entity's share of a `POST /api/pull`: what `GET /api/entities` asks in its query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PullWant {
    pub entity: String,
    pub ids: Vec<String>,
    /// Parts to send; every part when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// The version held of each id (one per id, or none): child parts come as deltas above it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub have: Vec<i64>,
}

/// `POST /api/pull` body: a till's whole burst in one request, so its ids travel in a body
/// that can be compressed (`Content-Encoding: zstd`) instead of a query string, and the
/// answers of every entity share one compressed body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PullRequest {
    pub pulls: Vec<PullWant>,
}

/// `POST /api/pull` answer: one batch pull per want, in the order asked, all read at one
/// consistent point of the hub's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PullAnswer {
    pub pulls: Vec<BatchPull>,
}

/// `GET /api/snapshot` answer: every synced row, consistent at stream position `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub node_id: String,
    pub seq: i64,
    pub v: i64,
    /// Which rows it carries: `full` (every row; also what a hub too old to say meant),
    /// `light`, `day` or `screens`. A node that loads anything but `full` copies the rest of
    /// the history in pages (`GET /api/backfill`) before it may lead.
    #[serde(default = "full_scope")]
    pub scope: String,
    /// Table name -> rows, each with its `id`, columns and version columns.
    #[schema(value_type = Object)]
    pub tables: BTreeMap<String, Vec<Row>>,
}

fn full_scope() -> String {
    "full".into()
}

/// `GET /api/backfill?entity=&after=&limit=` answer: the next page of an entity's rows in id
/// order, every part, for a node copying the shop's history after a day snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackfillPage {
    #[serde(flatten)]
    pub pull: BatchPull,
    /// The `after` of the next page; absent after the entity's last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /api/status`: what a node is and how its link to the hub is doing; the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    pub node_id: String,
    /// `hub` or `till`.
    pub role: String,
    /// `online` (following the hub), `syncing` (catching up), `offline` (hub unreachable).
    pub state: String,
    /// Base URL of the hub this node follows (its own URL on the hub).
    pub hub_url: Option<String>,
    pub hub_node_id: Option<String>,
    /// Last stream sequence merged (till) or sent (hub).
    pub seq: i64,
    /// A till's own writes not yet back from the hub (its outbox).
    pub pending: u64,
    /// A till's writes the hub refused, set aside for the manager.
    #[serde(default)]
    pub rejected: u64,
    /// When the node last lost the hub, ms since epoch, while offline.
    pub offline_since: Option<i64>,
    /// Scheduled backups, on a node that makes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// Highest hub term this node has seen (0 for a fixed `--role hub` setup).
    #[serde(default)]
    pub term: i64,
    /// This node's election priority (higher is preferred as hub; screens are never hub).
    #[serde(default)]
    pub priority: i64,
    /// `hub`, `till` or `screen` when this node lets the election decide; None for a fixed role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<String>,
    /// The shop's nodes this node can see (itself included), when it is in a mesh.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    /// Why the hub last changed, while that is recent (for the UI's banner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_change: Option<HubChange>,
    /// While this node copies the shop's history behind its day snapshot: the entity it is
    /// at (it sells meanwhile, but may not lead). Absent when it holds what it should.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_copying: Option<String>,
    /// This device's id: the SHA-256 of its public key, base32 (what pairing and the roster
    /// will name it by).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Whether this device belongs to a roster (it then talks to the shop's devices only).
    #[serde(default)]
    pub paired: bool,
    /// While a follower is offline: why its last try failed (the hub unreachable, or not
    /// admitting this device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_error: Option<String>,
    /// The name staff know this node by ("Till 2", "Manager PC").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Which term a hub serves and what it took over: a follower whose data came from the hub and
/// term this one took over from, no newer than `from_v`, catches up by version; any other
/// follower takes a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lineage {
    #[serde(default)]
    pub term: i64,
    /// The hub (and its term) this hub's data followed when it claimed.
    #[serde(default)]
    pub prev_hub: Option<String>,
    #[serde(default)]
    pub prev_term: i64,
    /// The highest version this hub held when it claimed.
    #[serde(default)]
    pub from_v: i64,
}

/// One node of the mesh as another node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerStatus {
    pub node_id: String,
    /// A name staff know it by (`--name`, e.g. "Till 2").
    pub name: String,
    pub url: String,
    /// `hub`, `till` or `screen`.
    pub role: String,
    pub priority: i64,
    /// Highest hub version its data holds.
    pub fresh: i64,
    pub term: i64,
    pub live: bool,
}

/// The last change of hub this node saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HubChange {
    pub term: i64,
    pub hub_node_id: String,
    pub hub_name: String,
    /// When (RFC 3339 UTC).
    pub at: String,
}

/// `GET /api/changed?since_v=V`: which entities moved after hub version V, so a till that
/// was current under another hub catches up without a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChangedSince {
    /// The hub's version when this was read.
    pub v: i64,
    /// Entities changed (or gone) after `since_v`, oldest change first.
    pub items: Vec<Capsule>,
    /// More remain: ask again with `since_v` = the last item's `v`.
    pub more: bool,
}

/// `GET /api/journal?after=V`: the writes the hub's data holds, applied after version V, as
/// sent. Every replica that may become hub keeps them, so a write retried across a failover
/// stays a duplicate and a hub that loses a partition can replay what the winner lacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JournalPage {
    pub entries: Vec<JournalEntry>,
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JournalEntry {
    pub mid: String,
    /// The version the hub applied it at.
    pub v: i64,
    pub mutation: Mutation,
}

/// One write in a till's outbox (`GET /api/outbox`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxEntry {
    pub mid: String,
    pub table: String,
    pub action: String,
    /// When the cashier made it (RFC 3339 UTC).
    pub queued_at: String,
    /// Sends to the hub so far.
    pub attempts: i64,
    /// `pending` (not yet confirmed), `sent` (confirmed, not yet seen back in the stream),
    /// `rejected` (the hub refused it; set aside until retried or discarded).
    pub state: String,
    /// Hub version once confirmed.
    pub hub_seq: Option<i64>,
    /// The hub's reason for a rejection, or the last failed attempt's error.
    pub error: Option<String>,
}

/// `GET /api/outbox` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outbox {
    /// Waiting for the hub (pending or sent but not yet seen back), oldest first: at most a
    /// page of them (`limit`), `pending_total` in all.
    pub pending: Vec<OutboxEntry>,
    /// Refused by the hub, oldest first: at most a page of them, `rejected_total` in all.
    pub rejected: Vec<OutboxEntry>,
    #[serde(default)]
    pub pending_total: u64,
    #[serde(default)]
    pub rejected_total: u64,
}

/// What the dashboard shows of a node's scheduled backups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackupStatus {
    pub dir: String,
    pub every_s: u64,
    pub keep: usize,
    /// Last successful copy: its file, size in bytes, and when (RFC 3339 UTC).
    pub last_file: Option<String>,
    pub last_bytes: Option<u64>,
    pub last_at: Option<String>,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
    /// Copies in the folder now.
    pub count: usize,
}

/// Who is connecting to `/ws`, from its query string.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct WsParams {
    /// Replay log entries after this position before going live.
    pub since: Option<i64>,
    /// The hub and term `since` was counted in; a different one makes `since` meaningless
    /// there, so the subscriber gets the live stream and catches up by version instead.
    pub hub: Option<String>,
    pub term: Option<i64>,
    pub node: Option<String>,
    pub role: Option<String>,
    /// `zstd`: frames of [`ZSTD_FRAME_ABOVE`] bytes or more come as binary messages, each one
    /// zstd-compressed JSON frame (shorter ones stay text). A till asks for it; a browser
    /// does not.
    #[serde(default)]
    pub encoding: Option<FrameEncoding>,
}

/// How a `/ws` subscriber wants its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FrameEncoding {
    Zstd,
}

/// Frames shorter than this stay text even for a zstd subscriber: a single capsule shrinks by
/// a few bytes and costs a compressor's set-up.
pub const ZSTD_FRAME_ABOVE: usize = 512;

/// `POST /api/admin/modes`: one entity's rollout mode.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMode {
    pub entity: String,
    pub mode: String,
}

/// `POST /api/nodes/report`: a follower's periodic word on its sync, for the hub dashboard.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeReport {
    pub node_id: String,
    pub role: String,
    #[serde(default)]
    pub state: Option<String>,
    /// The node's replica measurements (`ReplicaMetricsJson`), shown as they are.
    #[serde(default)]
    pub replica: Option<serde_json::Value>,
}
