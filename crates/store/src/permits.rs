//! Who may write what: the staff roles' permissions, checked on every row a write changes.
//!
//! The check runs in [`crate::pipeline::apply_row`], the one place every path that writes a
//! row passes (a write at the hub, a till's local commit offline, a queued write adopted or
//! replayed after a hub change), so a till cannot get around it by calling an API, and a hub
//! checks again what a till let through. It reads the write's [`Actor`] (stamped by the node
//! that served the screen), the staff and role rows this node holds, and the row as stored.
//!
//! A shop where nobody can log in yet (no member of staff has a PIN) runs as before staff
//! existed: every write is allowed, and the first PIN set is an owner's (so the shop is never
//! locked out of its own settings). From then on every write needs a logged-in member of staff whose role has
//! the permission, or an approver's (a manager's PIN on the spot) — except kitchen work,
//! which a kitchen screen moves along without a login, and the device roster, which its
//! signatures govern.

use capsule_protocol::{Action, Actor, Mutation, Row, TableDef};
use rusqlite::{Connection, OptionalExtension};

use crate::sql::{int, text};
use crate::{Result, StoreError};

/// Every permission, with what it allows (shown to the manager who edits a role).
pub const PERMISSIONS: &[(&str, &str)] = &[
    (
        "order.sell",
        "open orders, add and change lines, send them to the kitchen",
    ),
    ("order.pay", "take payments and close orders"),
    (
        "order.discount",
        "give a discount above the shop's free discount limit",
    ),
    (
        "order.void",
        "void a line or an order after it went to the kitchen",
    ),
    (
        "order.price",
        "sell at a price other than the menu's (an open price, a price override)",
    ),
    ("order.reopen", "reopen a paid, closed or void order"),
    ("order.refund", "change or remove a payment taken"),
    ("shift.run", "open and close a cashier's shift"),
    (
        "kitchen.bump",
        "move kitchen work along (a kitchen screen needs no login for it)",
    ),
    ("menu.sold_out", "mark an item sold out or back"),
    ("menu.edit", "change the menu"),
    ("settings.edit", "change the shop's settings and printers"),
    ("report.z", "take the Z report (close the day)"),
    (
        "staff.edit",
        "add staff, change their names, roles and PINs",
    ),
    (
        "staff.roles",
        "change what roles may do, and the owners' accounts",
    ),
    ("outbox.discard", "discard a write the hub refused"),
    ("clock.own", "clock in and out, and take breaks"),
    ("clock.others", "clock other staff in and out"),
];

/// The built-in roles: id, English and Arabic names, permissions. A `staff_role` row with the
/// same id replaces a role's permissions; the owner's are fixed.
pub const BUILTIN_ROLES: &[(&str, &str, &str, &[&str])] = &[
    ("owner", "Owner", "المالك", &[]),
    (
        "manager",
        "Manager",
        "المدير",
        &[
            "order.sell",
            "order.pay",
            "order.discount",
            "order.void",
            "order.price",
            "order.reopen",
            "order.refund",
            "shift.run",
            "kitchen.bump",
            "menu.sold_out",
            "menu.edit",
            "settings.edit",
            "report.z",
            "staff.edit",
            "outbox.discard",
            "clock.own",
            "clock.others",
        ],
    ),
    (
        "cashier",
        "Cashier",
        "أمين الصندوق",
        &[
            "order.sell",
            "order.pay",
            "shift.run",
            "kitchen.bump",
            "menu.sold_out",
            "clock.own",
        ],
    ),
    (
        "waiter",
        "Waiter",
        "النادل",
        &["order.sell", "kitchen.bump", "clock.own"],
    ),
    (
        "kitchen",
        "Kitchen",
        "المطبخ",
        &["kitchen.bump", "menu.sold_out", "clock.own"],
    ),
];

/// The role every permission belongs to.
pub const OWNER: &str = "owner";

/// What a write to each table needs, before the state of the row is looked at: `None` for a
/// table no staff permission governs (the roster: its signatures do). Every table of the
/// schema is named here (a test checks it), so a new table is never writable by accident.
const TABLES: &[(&str, Option<&str>)] = &[
    ("order_header", Some("order.sell")),
    ("order_line", Some("order.sell")),
    ("order_payment", Some("order.pay")),
    ("job_order_header", Some("kitchen.bump")),
    ("job_order_detail", Some("kitchen.bump")),
    ("job_order_batch", Some("kitchen.bump")),
    ("pos_shift", Some("shift.run")),
    ("shop_settings", Some("settings.edit")),
    ("printer", Some("settings.edit")),
    ("menu_category", Some("menu.edit")),
    ("menu_item", Some("menu.edit")),
    ("menu_modifier", Some("menu.edit")),
    ("z_report", Some("report.z")),
    ("time_clock", Some("clock.own")),
    ("staff", Some("staff.edit")),
    ("staff_pin", Some("staff.edit")),
    ("staff_role", Some("staff.roles")),
    ("device", None),
    // Written by the node that locked a login out, or that lost or found a printer (a screen
    // may not: the API refuses it).
    ("staff_lockout", None),
    ("printer_status", None),
];

/// Order statuses an order is finished in.
const FINISHED: &[&str] = &["paid", "closed", "void"];

/// Refuses `m` (a 403 naming the permission) unless its actor may write it, given the row as
/// stored now (`old`).
pub(crate) fn check(
    conn: &Connection,
    t: &TableDef,
    old: Option<&Row>,
    m: &Mutation,
) -> Result<()> {
    let Some(&(_, base)) = TABLES.iter().find(|(name, _)| *name == t.name) else {
        return Err(StoreError::Forbidden(format!(
            "no staff permission covers table '{}'",
            t.name
        )));
    };
    if let Some((_, column)) = ACTOR_COLUMNS
        .iter()
        .find(|(table, column)| t.name == *table && m.row.contains_key(*column))
    {
        return Err(StoreError::Invalid(format!(
            "'{}.{column}' is filled by the core from who is logged in",
            t.name
        )));
    }
    let Some(base) = base else {
        return Ok(());
    };
    check_reasons(conn, t, old, m)?;
    if !has_staff(conn)? {
        return first_staff_rule(conn, t, m);
    }
    let needs = needed(conn, t, old, m, base)?;
    let actor = m.by.clone().unwrap_or_default();
    for need in needs {
        // The kitchen screen's device decides: it bumps without anyone logged in.
        if need == "kitchen.bump" && actor.staff.is_none() {
            continue;
        }
        allowed(conn, &actor, need)?;
    }
    Ok(())
}

/// Where the shop keeps a list of reasons, a void of something the kitchen has and a
/// discount give one of them (in every shop, with staff or not).
fn check_reasons(conn: &Connection, t: &TableDef, old: Option<&Row>, m: &Mutation) -> Result<()> {
    if !matches!(t.name.as_str(), "order_header" | "order_line") || m.action == Action::Delete {
        return Ok(());
    }
    let new = effective(t, old, m);
    let before = old.and_then(|o| text(o, "status"));
    let voided = text(&new, "status") == Some("void")
        && before != Some("void")
        && match t.name.as_str() {
            "order_line" => before == Some("sent"),
            _ => was_sent(conn, m, before.unwrap_or("open"))?,
        };
    let discount_col = if t.name == "order_line" {
        "discount"
    } else {
        "order_discount"
    };
    let discounted = m.row.contains_key(discount_col)
        && int(&new, discount_col) > 0
        && old.and_then(|o| o.get(discount_col)) != new.get(discount_col);
    for (asked, list_col, reason_col, what) in [
        (voided, "void_reasons", "void_reason", "void"),
        (
            discounted,
            "discount_reasons",
            "discount_reason",
            "discount",
        ),
    ] {
        if !asked {
            continue;
        }
        let list: Option<String> = conn
            .prepare_cached(&format!(
                "SELECT {list_col} FROM shop_settings WHERE id = 'shop'"
            ))?
            .query_row([], |r| r.get(0))
            .optional()?
            .flatten();
        let reasons: Vec<&str> = list
            .as_deref()
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .collect();
        if reasons.is_empty() {
            continue;
        }
        let given = text(&m.row, reason_col).map(str::trim).unwrap_or_default();
        if !reasons.contains(&given) {
            return Err(StoreError::Invalid(format!(
                "a {what} needs a reason, one of: {} ('{reason_col}')",
                reasons.join(", ")
            )));
        }
    }
    Ok(())
}

/// Whether anyone can log in here: a member of staff has a PIN (whether still active or not:
/// a shop whose staff all left is not open to anyone).
fn has_staff(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM staff_pin LIMIT 1")?
        .query_row([], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Before anyone can log in, anything goes, but the first PIN is an owner's: a shop whose
/// only login were a cashier's would have no one to approve anything.
fn first_staff_rule(conn: &Connection, t: &TableDef, m: &Mutation) -> Result<()> {
    if t.name == "staff_pin"
        && m.action != Action::Delete
        && role_of(conn, text(&m.row, "id").unwrap_or_default())?.as_deref() != Some(OWNER)
    {
        return Err(StoreError::Forbidden(
            "the shop's first PIN must be its owner's (a member of staff with role 'owner')".into(),
        ));
    }
    Ok(())
}

/// The row as it will be stored: a merge over the old row, a save or insert over the table's
/// defaults (a save that leaves out `status` puts it back to its default, and is judged so).
fn effective(t: &TableDef, old: Option<&Row>, m: &Mutation) -> Row {
    let mut row = match (m.action, old) {
        (Action::Merge | Action::Delete, Some(o)) => o.clone(),
        _ => t
            .columns
            .iter()
            .filter(|c| !c.derived)
            .map(|c| (c.name.clone(), c.default_json()))
            .collect(),
    };
    for (k, v) in &m.row {
        row.insert(k.clone(), v.clone());
    }
    row
}

/// One write as the rules look at it: the row as stored (`old`), the write, the row as it
/// will be stored (`new`), and which of the write's columns change something.
struct Judged<'a> {
    conn: &'a Connection,
    old: Option<&'a Row>,
    m: &'a Mutation,
    new: &'a Row,
    changes: &'a dyn Fn(&str) -> bool,
}

/// The permissions `m` needs, looking at what it changes, in one phase per kind of table.
fn needed(
    conn: &Connection,
    t: &TableDef,
    old: Option<&Row>,
    m: &Mutation,
    base: &'static str,
) -> Result<Vec<&'static str>> {
    let new = effective(t, old, m);
    let changes =
        |col: &str| m.row.contains_key(col) && old.and_then(|o| o.get(col)) != new.get(col);
    let mut needs = Vec::new();
    let judged = Judged {
        conn,
        old,
        m,
        new: &new,
        changes: &changes,
    };
    match t.name.as_str() {
        "order_header" => order_needs(&judged, &mut needs)?,
        "order_line" => line_needs(&judged, &mut needs)?,
        "order_payment" => {
            // A payment of a finished order changes what a closed sale took: a refund.
            let finished = order_finished(conn, text(&new, "order_id"))?;
            match (m.action, old) {
                (Action::Insert, _) | (Action::Save, None) if !finished => needs.push(base),
                _ => needs.push("order.refund"),
            }
        }
        "menu_item"
            if old.is_some()
                && m.action == Action::Merge
                && m.row.keys().all(|k| {
                    matches!(k.as_str(), "id" | "available" | "updated_at") || !changes(k)
                }) =>
        {
            needs.push("menu.sold_out");
        }
        "staff" => staff_needs(conn, old, m, &new, &mut needs)?,
        "staff_pin" => {
            let id = text(&new, "id").unwrap_or_default();
            if m.action != Action::Delete {
                check_pin_hash(text(&new, "pin_hash"))?;
            }
            // A member of staff changes their own PIN without a manager; an owner's PIN only
            // an owner resets (else a manager could log in as the owner).
            let own = m.by.as_ref().and_then(|a| a.staff.as_deref()) == Some(id);
            if !own {
                needs.push(base);
            }
            if role_of(conn, id)?.as_deref() == Some(OWNER) && !own {
                needs.push("staff.roles");
            }
        }
        "staff_role" => {
            if text(&new, "id") == Some(OWNER) {
                return Err(StoreError::Forbidden(
                    "the owner's role may do everything and cannot be changed".into(),
                ));
            }
            for p in split_permissions(text(&new, "permissions").unwrap_or_default()) {
                if !PERMISSIONS.iter().any(|(name, _)| *name == p) {
                    return Err(StoreError::Invalid(format!(
                        "unknown permission '{p}' (permissions: {})",
                        PERMISSIONS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
            needs.push(base);
        }
        "time_clock" => clock_needs(old, m, &new, base, &mut needs)?,
        _ => needs.push(base),
    }
    Ok(needs)
}

fn split_permissions(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|p| !p.is_empty())
}

/// An order: its status moves (reopen, void after the kitchen has it, pay), judged on the
/// status it will have; a discount above the free limit.
fn order_needs(w: &Judged<'_>, needs: &mut Vec<&'static str>) -> Result<()> {
    let Judged {
        conn,
        old,
        m,
        new,
        changes,
    } = *w;
    if m.action == Action::Delete {
        needs.push("order.void");
        return Ok(());
    }
    let before = old.and_then(|o| text(o, "status"));
    let after = text(new, "status").unwrap_or("open");
    match before {
        // Out of a finished status, other than a paid order being closed.
        Some(b) if FINISHED.contains(&b) && after != b && (b, after) != ("paid", "closed") => {
            needs.push("order.reopen");
        }
        Some(b) if FINISHED.contains(&b) => {
            // Still finished: what it says may change only with a reopen's permission.
            let edits = m.row.keys().any(|k| {
                !matches!(k.as_str(), "id" | "status" | "updated_at" | "closed_at") && changes(k)
            });
            needs.push(if edits { "order.reopen" } else { "order.pay" });
        }
        _ if after == "void" && was_sent(conn, m, before.unwrap_or("open"))? => {
            needs.push("order.void")
        }
        _ if after == "paid" || after == "closed" => needs.push("order.pay"),
        _ => needs.push("order.sell"),
    }
    if changes("order_discount") && int(new, "order_discount") > 0 {
        let value = old.map_or(0, |o| int(o, "subtotal"));
        if over_free_limit(conn, int(new, "order_discount"), value)? {
            needs.push("order.discount");
        }
    }
    Ok(())
}

/// A line: anything done to a line the kitchen has (its status back, its quantity, price or
/// discount) is a void; a line of a finished order is a reopen; a discount above the free
/// limit, judged on the line as it will be (a later change of quantity is judged again).
fn line_needs(w: &Judged<'_>, needs: &mut Vec<&'static str>) -> Result<()> {
    let Judged {
        conn,
        old,
        m,
        new,
        changes,
    } = *w;
    if order_finished(conn, text(new, "order_id"))? {
        needs.push("order.reopen");
        return Ok(());
    }
    let was_sent_line = old.and_then(|o| text(o, "status")) == Some("sent");
    let touched = m.action == Action::Delete
        || m.row
            .keys()
            .any(|k| !matches!(k.as_str(), "id" | "note" | "batch_id") && changes(k));
    if was_sent_line && touched {
        needs.push("order.void");
    } else {
        needs.push("order.sell");
    }
    if m.action != Action::Delete && off_the_menu(m, old, changes, new) {
        needs.push("order.price");
    }
    let priced = ["discount", "qty", "unit_price", "modifier_price"]
        .iter()
        .any(|c| changes(c));
    if m.action != Action::Delete && priced && int(new, "discount") > 0 {
        let value = int(new, "qty")
            .saturating_mul(int(new, "unit_price").saturating_add(int(new, "modifier_price")));
        if over_free_limit(conn, int(new, "discount"), value)? {
            needs.push("order.discount");
        }
    }
    Ok(())
}

/// What makes a line the menu's item: changing any of it on a line already rung up is selling
/// something else at that line's price (a water renamed a steak, zero-rated to skip the VAT).
const LINE_IDENTITY: &[&str] = &["item_code", "name_en", "name_ar", "tax_class", "station"];

/// Whether a line's write sets a price other than the menu's, as the node that served the
/// screen priced it (`Actor::menu_price`): a new line at another price or of no menu item (an
/// open price), a line given another item or price, modifiers priced otherwise or other than
/// the ones priced. A write stamped by a node that prices no lines (an older release, during
/// an upgrade) is not judged here.
fn off_the_menu(
    m: &Mutation,
    old: Option<&Row>,
    changes: &dyn Fn(&str) -> bool,
    new: &Row,
) -> bool {
    let actor = m.by.clone().unwrap_or_default();
    let Some(modifier_price) = actor.menu_modifier_price else {
        return false;
    };
    if old.is_some() && LINE_IDENTITY.iter().any(|c| changes(c)) {
        return true;
    }
    let unit = changes("unit_price") && actor.menu_price != Some(int(new, "unit_price"));
    let same_mods = |a: &str, b: &str| split_modifiers(a).eq(split_modifiers(b));
    let modifiers = (changes("modifier_price") || changes("modifiers"))
        && (modifier_price != int(new, "modifier_price")
            || !same_mods(
                actor.menu_modifiers.as_deref().unwrap_or_default(),
                text(new, "modifiers").unwrap_or_default(),
            ));
    unit || modifiers
}

/// A line's modifiers (`a; b`) one by one, as the menu names them.
pub fn split_modifiers(list: &str) -> impl Iterator<Item = &str> {
    list.split(';').map(str::trim).filter(|n| !n.is_empty())
}

/// Whether the order `id` is paid, closed or void.
fn order_finished(conn: &Connection, id: Option<&str>) -> Result<bool> {
    let Some(id) = id else { return Ok(false) };
    let status: Option<Option<String>> = conn
        .prepare_cached("SELECT status FROM order_header WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(status
        .flatten()
        .is_some_and(|s| FINISHED.contains(&s.as_str())))
}

/// A member of staff's row: staff.edit; an owner's row, or a role with more than the writer
/// may do, staff.roles (a manager cannot make anyone, themselves included, more than a
/// manager); the shop's last active owner stays.
fn staff_needs(
    conn: &Connection,
    old: Option<&Row>,
    m: &Mutation,
    new: &Row,
    needs: &mut Vec<&'static str>,
) -> Result<()> {
    needs.push("staff.edit");
    let old_role = old.and_then(|o| text(o, "role"));
    let new_role = text(new, "role");
    if new_role == Some(OWNER) || old_role == Some(OWNER) {
        needs.push("staff.roles");
        let leaving = m.action == Action::Delete
            || new_role != Some(OWNER)
            || new.get("active") == Some(&serde_json::Value::Bool(false));
        if old_role == Some(OWNER) && leaving && active_owners(conn)? <= 1 {
            return Err(StoreError::Conflict(
                "the shop's last owner stays: make someone else an owner first".into(),
            ));
        }
        return Ok(());
    }
    if let (Some(role), Some(writer)) = (new_role, m.by.as_ref().and_then(|a| a.staff.as_deref()))
        && role_of(conn, writer)?.as_deref() != Some(OWNER)
    {
        let mine = match role_of(conn, writer)? {
            Some(r) => role_permissions(conn, &r)?,
            None => Vec::new(),
        };
        if role_permissions(conn, role)?
            .iter()
            .any(|p| !mine.contains(p))
        {
            needs.push("staff.roles");
        }
    }
    Ok(())
}

fn active_owners(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*) FROM staff WHERE role = 'owner' AND COALESCE(active, 1) != 0",
        )?
        .query_row([], |r| r.get(0))?)
}

/// How far a punch may be from the moment the node stamped it (a till's clock and the
/// screen's, a slow tap).
const PUNCH_SLACK_MS: i64 = 5 * 60 * 1000;

/// The time clock: someone's own entry, punched now (clock.own): started when it is made,
/// ended when it is closed, never made already closed; anything else (another's time, a
/// correction, a time in the past) clock.others. A closed entry is never changed.
fn clock_needs(
    old: Option<&Row>,
    m: &Mutation,
    new: &Row,
    base: &'static str,
    needs: &mut Vec<&'static str>,
) -> Result<()> {
    if old.and_then(|o| text(o, "status")) == Some("closed") {
        return Err(StoreError::Conflict(
            "a closed time entry is not changed (its hours may be in a Z report): add a new one"
                .into(),
        ));
    }
    let me = m.by.as_ref().and_then(|a| a.staff.as_deref());
    let stamped = m.by.as_ref().and_then(|a| a.at.as_deref()).and_then(ms_of);
    let now_ish = |col: &str| match (text(new, col).and_then(ms_of), stamped) {
        (Some(t), Some(at)) => (t - at).abs() <= PUNCH_SLACK_MS,
        _ => false,
    };
    let whose_now = text(new, "staff_id");
    let whose_before = old.and_then(|o| text(o, "staff_id"));
    let own = me.is_some() && whose_now == me && whose_before.is_none_or(|w| Some(w) == me);
    let punched_now = match (m.action, old) {
        (Action::Delete, _) => false,
        (_, None) => text(new, "status") != Some("closed") && now_ish("started_at"),
        (_, Some(_)) => {
            !m.row.contains_key("started_at")
                && (text(new, "status") != Some("closed") || now_ish("ended_at"))
        }
    };
    needs.push(if own && punched_now {
        base
    } else {
        "clock.others"
    });
    Ok(())
}

/// Milliseconds since the epoch of an RFC 3339 UTC time.
fn ms_of(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// Columns the core fills from the write's logged-in member of staff on insert (a screen
/// cannot name someone else): who took a payment.
const ACTOR_COLUMNS: &[(&str, &str)] = &[("order_payment", "taken_by")];

/// Fills `row`'s actor columns from `m`'s staff member (on every path that inserts a row).
pub(crate) fn stamp_actor(t: &TableDef, m: &Mutation, row: &mut Row) {
    for (table, column) in ACTOR_COLUMNS {
        if t.name == *table {
            let staff = m.by.as_ref().and_then(|b| b.staff.clone());
            row.insert(
                (*column).to_string(),
                staff.map_or(serde_json::Value::Null, serde_json::Value::from),
            );
        }
    }
}

/// A whole-row save keeps who made the row.
pub(crate) fn keep_actor(t: &TableDef, old: &Row, new: &mut Row) {
    for (table, column) in ACTOR_COLUMNS {
        if t.name == *table
            && let Some(v) = old.get(*column)
        {
            new.insert((*column).to_string(), v.clone());
        }
    }
}

/// Whether an order that was `before` had gone to the kitchen: sent, or with a sent line.
fn was_sent(conn: &Connection, m: &Mutation, before: &str) -> Result<bool> {
    if before == "sent" {
        return Ok(true);
    }
    Ok(conn
        .prepare_cached("SELECT 1 FROM order_line WHERE order_id = ?1 AND status = 'sent' LIMIT 1")?
        .query_row([text(&m.row, "id").unwrap_or_default()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether a discount of `amount` on `value` is above what the shop lets anyone give
/// (`shop_settings.discount_limit_bp` of the value; 0: every discount needs the permission).
fn over_free_limit(conn: &Connection, amount: i64, value: i64) -> Result<bool> {
    let limit_bp: i64 = conn
        .prepare_cached("SELECT discount_limit_bp FROM shop_settings WHERE id = 'shop'")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .optional()?
        .flatten()
        .unwrap_or(0);
    let free = i128::from(value.max(0)) * i128::from(limit_bp) / 10_000;
    Ok(i128::from(amount) > free)
}

/// What every stored PIN hash starts with: argon2id at the parameters the nodes hash with.
pub const PIN_HASH_PREFIX: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

/// A PIN is stored only as an argon2id hash (a PHC string), never as the PIN itself.
fn check_pin_hash(hash: Option<&str>) -> Result<()> {
    match hash {
        // The node's own parameters only: a writer picking its own (a gigabyte, a billion
        // passes) would hang every login that verifies against it.
        Some(h) if h.starts_with(PIN_HASH_PREFIX) && h.split('$').count() == 6 => Ok(()),
        _ => Err(StoreError::Invalid(
            "pin_hash must be an argon2id PHC string (set a PIN through POST /api/staff/pin)"
                .into(),
        )),
    }
}

/// The role of an active staff member; `None` when there is no such active staff member.
fn role_of(conn: &Connection, staff: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT role FROM staff WHERE id = ?1 AND COALESCE(active, 1) != 0")?
        .query_row([staff], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}

/// Whether active staff member `staff` has `permission` through their role.
pub fn staff_may(conn: &Connection, staff: &str, permission: &str) -> Result<bool> {
    match role_of(conn, staff)? {
        Some(role) => role_may(conn, &role, permission),
        None => Ok(false),
    }
}

/// The permissions of a role: its `staff_role` row, else its built-in defaults.
pub fn role_permissions(conn: &Connection, role: &str) -> Result<Vec<String>> {
    if role == OWNER {
        return Ok(PERMISSIONS.iter().map(|(p, _)| (*p).to_string()).collect());
    }
    let row: Option<String> = conn
        .prepare_cached("SELECT permissions FROM staff_role WHERE id = ?1")?
        .query_row([role], |r| r.get(0))
        .optional()?;
    Ok(match row {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect(),
        None => BUILTIN_ROLES
            .iter()
            .find(|(id, ..)| *id == role)
            .map(|(_, _, _, perms)| perms.iter().map(|p| (*p).to_string()).collect())
            .unwrap_or_default(),
    })
}

fn role_may(conn: &Connection, role: &str, permission: &str) -> Result<bool> {
    Ok(role_permissions(conn, role)?
        .iter()
        .any(|p| p == permission))
}

/// Refuses unless the actor's staff member, or the approver, has `need`.
fn allowed(conn: &Connection, actor: &Actor, need: &str) -> Result<()> {
    let Some(staff) = actor.staff.as_deref() else {
        return Err(StoreError::Forbidden(format!(
            "log in first: this needs a staff member with permission '{need}'"
        )));
    };
    if role_of(conn, staff)?.is_none() {
        return Err(StoreError::Forbidden(format!(
            "staff member '{staff}' is not an active member of staff here (permission '{need}')"
        )));
    }
    if staff_may(conn, staff, need)? {
        return Ok(());
    }
    // An approval is for the permission the manager approved, nothing else.
    if let Some(approver) = actor.approver.as_deref()
        && actor.approved.as_deref() == Some(need)
        && staff_may(conn, approver, need)?
    {
        return Ok(());
    }
    Err(StoreError::Forbidden(format!(
        "permission '{need}' needed: ask a manager to approve"
    )))
}

/// The menu's prices for a line, as the node serving the screen reads them to stamp the write.
#[derive(Debug, Clone, Default)]
pub struct MenuPrices {
    /// The item's unit price; `None` when the line is no menu item (an open price).
    pub unit: Option<i64>,
    /// The chosen modifiers' price per unit.
    pub modifiers: i64,
    /// The modifiers that price was read for.
    pub modifier_names: String,
}

/// A role as the dashboard shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleView {
    pub id: String,
    pub name_en: String,
    pub name_ar: Option<String>,
    pub permissions: Vec<String>,
    /// One of the built-in roles (the owner's cannot be changed).
    pub builtin: bool,
}

/// What a PIN login needs to know of a member of staff.
#[derive(Debug, Clone)]
pub struct StaffLogin {
    pub id: String,
    pub name: String,
    pub name_ar: Option<String>,
    pub role: String,
    /// The argon2id hash; `None` when no PIN was set.
    pub pin_hash: Option<String>,
    pub permissions: Vec<String>,
}

impl crate::Store {
    /// The menu's prices for a line's write as this node holds the menu now: the unit price
    /// of its item (by code; `None` for no such item, or a line that does not say what the
    /// item is: another name, tax class or station), its chosen modifiers' price, and those
    /// modifiers. A merge is read with the stored line's values for what it leaves out.
    pub fn menu_prices(&self, line: &Row) -> Result<MenuPrices> {
        self.with_reader(|conn| {
            let stored: Option<Row> = conn
                .prepare_cached(
                    "SELECT item_code, modifiers, name_en, tax_class, station FROM order_line WHERE id = ?1",
                )?
                .query_row([text(line, "id").unwrap_or_default()], |r| {
                    let mut row = Row::new();
                    for (i, c) in ["item_code", "modifiers", "name_en", "tax_class", "station"]
                        .iter()
                        .enumerate()
                    {
                        if let Some(v) = r.get::<_, Option<String>>(i)? {
                            row.insert((*c).to_string(), serde_json::Value::from(v));
                        }
                    }
                    Ok(row)
                })
                .optional()?;
            let field = |c: &str| -> Option<String> {
                text(line, c)
                    .or_else(|| stored.as_ref().and_then(|s| text(s, c)))
                    .map(String::from)
            };
            let mods = field("modifiers").unwrap_or_default();
            let mut out = MenuPrices {
                unit: None,
                modifiers: 0,
                modifier_names: mods.clone(),
            };
            let Some(code) = field("item_code") else {
                return Ok(out);
            };
            // Codes are not unique: the item the line names at its price, else the first.
            let items: Vec<(String, i64, String, String, String)> = conn
                .prepare_cached(
                    "SELECT id, price, name_en, COALESCE(tax_class, 'standard'), station \
                     FROM menu_item WHERE code = ?1 ORDER BY id",
                )?
                .query_map([&code], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let name = field("name_en");
            let unit = line.get("unit_price").and_then(serde_json::Value::as_i64);
            let Some((item, price, item_name, tax, station)) = items
                .iter()
                .find(|(_, p, n, ..)| Some(*p) == unit && name.as_deref() == Some(n.as_str()))
                .or(items.first())
                .cloned()
            else {
                return Ok(out);
            };
            // The line is the menu's item only when it says what the item is.
            let is_item = name.as_deref().is_none_or(|n| n == item_name)
                && field("tax_class").as_deref().unwrap_or("standard") == tax
                && field("station").is_none_or(|s| s == station);
            out.unit = is_item.then_some(price);
            let chosen: std::collections::BTreeSet<&str> = split_modifiers(&mods).collect();
            let mut offered =
                conn.prepare_cached("SELECT name_en, price FROM menu_modifier WHERE item_id = ?1")?;
            for row in offered.query_map([&item], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
            })? {
                let (name, p) = row?;
                if chosen.contains(name.as_str()) {
                    out.modifiers = out.modifiers.saturating_add(p.unwrap_or(0));
                }
            }
            Ok(out)
        })
    }

    /// An active member of staff as a login sees them (`None`: no such active member).
    pub fn staff_login(&self, id: &str) -> Result<Option<StaffLogin>> {
        self.with_reader(|conn| {
            let row = conn
                .prepare_cached(
                    "SELECT s.name, s.name_ar, s.role, p.pin_hash FROM staff s \
                     LEFT JOIN staff_pin p ON p.id = s.id \
                     WHERE s.id = ?1 AND COALESCE(s.active, 1) != 0",
                )?
                .query_row([id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .optional()?;
            let Some((name, name_ar, role, pin_hash)) = row else {
                return Ok(None);
            };
            let permissions = role_permissions(conn, &role)?;
            Ok(Some(StaffLogin {
                id: id.to_string(),
                name,
                name_ar,
                role,
                pin_hash,
                permissions,
            }))
        })
    }

    /// Every role as it stands: the built-in ones (with a `staff_role` row's permissions where
    /// the shop changed them) and the shop's own; `builtin` says which.
    pub fn staff_roles(&self) -> Result<Vec<RoleView>> {
        self.with_reader(|conn| {
            let mut rows: Vec<(String, String, Option<String>)> = conn
                .prepare_cached("SELECT id, name_en, name_ar FROM staff_role ORDER BY id")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut out = Vec::new();
            for (id, en, ar, _) in BUILTIN_ROLES {
                let row = rows
                    .iter()
                    .position(|(r, ..)| r == id)
                    .map(|i| rows.remove(i));
                out.push(RoleView {
                    id: (*id).to_string(),
                    name_en: row.as_ref().map_or((*en).to_string(), |r| r.1.clone()),
                    name_ar: row
                        .as_ref()
                        .map_or(Some((*ar).to_string()), |r| r.2.clone()),
                    permissions: role_permissions(conn, id)?,
                    builtin: true,
                });
            }
            for (id, en, ar) in rows {
                let permissions = role_permissions(conn, &id)?;
                out.push(RoleView {
                    id,
                    name_en: en,
                    name_ar: ar,
                    permissions,
                    builtin: false,
                });
            }
            Ok(out)
        })
    }

    /// Whether this shop has staff (before it does, every screen acts without a login).
    pub fn has_staff(&self) -> Result<bool> {
        self.with_reader(|conn| has_staff(conn))
    }

    /// Whether `staff` may do `permission` now, or, in a shop without staff, anyone may.
    pub fn may(&self, staff: Option<&str>, permission: &str) -> Result<bool> {
        self.with_reader(|conn| {
            if !has_staff(conn)? {
                return Ok(true);
            }
            match staff {
                Some(s) => staff_may(conn, s, permission),
                None => Ok(false),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_schema_says_what_writing_it_needs() {
        let schema = capsule_protocol::Schema::builtin();
        for name in schema.tables.keys() {
            assert!(
                TABLES.iter().any(|(t, _)| t == name),
                "table '{name}' has no permission in permits::TABLES"
            );
        }
        for (_, perm) in TABLES {
            if let Some(p) = perm {
                assert!(PERMISSIONS.iter().any(|(n, _)| n == p), "{p}");
            }
        }
        for (_, _, _, perms) in BUILTIN_ROLES {
            for p in *perms {
                assert!(PERMISSIONS.iter().any(|(n, _)| n == p), "{p}");
            }
        }
    }
}
