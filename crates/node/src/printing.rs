//! This node's printing: builds receipts and kitchen tickets from the synced rows, queues them
//! durably (`capsule_store` `_print_job`) and sends them to the network printers, retrying a
//! printer that is off or out of paper without ever holding up a sale.

use std::sync::Arc;
use std::time::Duration;

use capsule_print::{Align, Block, COLUMNS, columns, money};
use capsule_print::{KitchenTicket, Payment, Receipt, ReceiptLang, ReceiptLine, TicketItem};
use capsule_protocol::Row;
use capsule_protocol::local_time::{self, TimeZone};
use capsule_store::{Enqueued, NewPrintJob, PrintDue, Report, Store, StoreError};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::printer_net::PrinterPolicy;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A printer that takes no more bytes for this long is stuck (out of paper, cover open).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries back off to this.
const MAX_RETRY_MS: i64 = 30_000;

/// Names what a job prints, so asking again for the same thing queues nothing new.
const JOB_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6361_7073_756c_6500_7072_696e_7400_0001);

fn job_id(parts: &[&str]) -> String {
    uuid::Uuid::new_v5(&JOB_NAMESPACE, parts.join("/").as_bytes()).to_string()
}

fn s(row: &Row, k: &str) -> Option<String> {
    row.get(k)
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|v| !v.trim().is_empty())
}

fn i(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(Value::as_i64).unwrap_or(0)
}

/// The shop's settings row (empty when there is none yet).
fn shop_row(store: &Store) -> Result<Value, StoreError> {
    Ok(store
        .table_rows("shop_settings")?
        .into_iter()
        .next()
        .map(Value::Object)
        .unwrap_or_default())
}

/// The shop's time zone, which every ticket and receipt prints its time in.
fn shop_zone(shop: &Value) -> TimeZone {
    local_time::zone_or_utc(shop["time_zone"].as_str())
}

/// Modifiers (`a; b`, by their English names) in Arabic as the item's menu names them; `None`
/// when the menu has no Arabic for any of them.
fn modifiers_ar(store: &Store, item_code: Option<&str>, modifiers: Option<&str>) -> Option<String> {
    let (code, mods) = (item_code?, modifiers?.trim());
    if mods.is_empty() {
        return None;
    }
    let item = store
        .rows_where("menu_item", "code", code)
        .ok()?
        .into_iter()
        .next()?;
    let offered: Vec<Row> = store
        .pull("item", &s(&item, "id")?, Some("modifiers"))
        .ok()?
        .payload
        .get("modifiers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_object().cloned())
        .collect();
    let mut any = false;
    let names: Vec<String> = capsule_store::permits::split_modifiers(mods)
        .map(|m| {
            match offered
                .iter()
                .find(|o| s(o, "name_en").as_deref() == Some(m))
                .and_then(|o| s(o, "name_ar"))
            {
                Some(ar) => {
                    any = true;
                    ar
                }
                None => m.to_string(),
            }
        })
        .collect();
    any.then(|| names.join("؛ "))
}

/// The ZATCA phase-1 QR code's text for a paid order, for a shop in Saudi Arabia with a VAT
/// number (`None` elsewhere).
fn zatca(shop: &Value, order: &Value, digits: u32) -> Option<String> {
    // A tax invoice is for a paid order (a bill before it carries none).
    if shop["country"].as_str() != Some("SA")
        || !matches!(order["status"].as_str(), Some("paid" | "closed"))
    {
        return None;
    }
    let vat_number = shop["tax_number"]
        .as_str()
        .filter(|t| !t.trim().is_empty())?;
    // Issued when it was paid: its last payment's time, the same on every copy.
    let issued = order["payments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["paid_at"].as_str())
        .max()
        .or(order["closed_at"].as_str())
        .map(str::to_string)
        .unwrap_or_else(capsule_protocol::now_rfc3339);
    Some(capsule_print::zatca_qr(&capsule_print::ZatcaInvoice {
        seller: shop["name"].as_str().unwrap_or_default().to_string(),
        vat_number: vat_number.to_string(),
        timestamp: local_time::utc_seconds(&issued),
        total: money(i(order, "total"), digits),
        vat: money(i(order, "tax_total"), digits),
    }))
}

fn order_label(order: &Value) -> String {
    match order.get("order_no").and_then(Value::as_i64) {
        Some(n) => format!("#{n}"),
        None => order
            .get("provisional_no")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_string(),
    }
}

/// The item code of each of an order's lines, by line id (a kitchen ticket's items name their
/// line, not their menu item).
fn line_codes(
    store: &Store,
    order_id: &str,
) -> Result<std::collections::HashMap<String, String>, StoreError> {
    let lines = store.pull("order", order_id, Some("lines"))?.payload;
    Ok(lines
        .get("lines")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some((
                l.get("id")?.as_str()?.to_string(),
                l.get("item_code")?.as_str()?.to_string(),
            ))
        })
        .collect())
}

/// What queuing did, for the caller's answer.
#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Queued {
    /// Jobs queued now.
    pub queued: Vec<String>,
    /// Jobs this request had already queued (a retry).
    pub already: Vec<String>,
    /// Why something could not be queued (no printer for a station).
    pub skipped: Vec<String>,
}

fn printers(store: &Store) -> Result<Vec<Row>, StoreError> {
    store.table_rows("printer")
}

/// This node's receipt printer: the one set up for it, else one for any till.
fn receipt_printer<'a>(store: &Store, printers: &'a [Row]) -> Option<&'a Row> {
    let node = store.node_id();
    let receipt = |p: &&Row| p.get("role").and_then(Value::as_str) == Some("receipt");
    printers
        .iter()
        .filter(receipt)
        .find(|p| s(p, "node_id").as_deref() == Some(node))
        .or_else(|| {
            printers
                .iter()
                .filter(receipt)
                .find(|p| s(p, "node_id").is_none())
        })
}

fn enqueue(
    store: &Store,
    out: &mut Queued,
    printer: &Row,
    id: &str,
    kind: &str,
    about: &str,
    blocks: &[capsule_print::Block],
) -> Result<(), StoreError> {
    let bytes = capsule_print::encode(blocks).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let new = store.enqueue_print(&NewPrintJob {
        id,
        printer_id: printer
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        printer: printer
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        address: printer
            .get("address")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        kind,
        about,
        bytes: &bytes,
    })?;
    match new {
        Enqueued::Queued => out.queued.push(id.to_string()),
        Enqueued::Already => out.already.push(id.to_string()),
        Enqueued::Full(waiting) => out.skipped.push(format!(
            "printer '{}' has {waiting} jobs waiting (is it off or out of paper?): this one was not queued",
            printer.get("name").and_then(Value::as_str).unwrap_or_default()
        )),
    }
    Ok(())
}

/// Queues one ticket per station for a round sent to the kitchen. `request`: a reprint's own
/// id (None: the round's first print, which a retry never repeats).
pub fn queue_kitchen(
    store: &Store,
    batch_id: &str,
    request: Option<&str>,
) -> Result<Queued, StoreError> {
    let mut out = Queued::default();
    let batch = Value::Object(store.pull("batch", batch_id, Some("header"))?.payload);
    let printers = printers(store)?;
    let zone = shop_zone(&shop_row(store)?);
    // Through its order's jobs (the order_id index): a send costs its own order's few jobs,
    // not the kitchen's history.
    let order_id = batch["order_id"].as_str().unwrap_or_default().to_string();
    let jobs: Vec<Row> = store
        .rows_where("job_order_header", "order_id", &order_id)?
        .into_iter()
        .filter(|j| s(j, "batch_id").as_deref() == Some(batch_id))
        .collect();
    for job in jobs {
        let station = s(&job, "station").unwrap_or_default();
        let kitchen = |p: &&Row| p.get("role").and_then(Value::as_str) == Some("kitchen");
        let printer = printers
            .iter()
            .filter(kitchen)
            .find(|p| s(p, "station").as_deref() == Some(station.as_str()))
            .or_else(|| {
                printers
                    .iter()
                    .filter(kitchen)
                    .find(|p| s(p, "station").is_none())
            });
        let Some(printer) = printer else {
            out.skipped
                .push(format!("no kitchen printer for station '{station}'"));
            continue;
        };
        let job_row_id = s(&job, "id").unwrap_or_default();
        let items = store.pull("job", &job_row_id, Some("items"))?.payload;
        let codes = line_codes(store, &order_id)?;
        let id = match request {
            None => job_id(&["kitchen", batch_id, &station]),
            Some(r) => job_id(&["kitchen-reprint", batch_id, &station, r]),
        };
        let ticket = KitchenTicket {
            station: station.clone(),
            order_label: order_label(&batch),
            table: batch
                .get("table_label")
                .and_then(Value::as_str)
                .map(str::to_string),
            addition: batch.get("kind").and_then(Value::as_str) == Some("addition"),
            batch_no: i(&batch, "batch_no"),
            // When the round was sent (a reprint says the same).
            printed_at: match batch["created_at"].as_str() {
                Some(at) => local_time::label(at, &zone),
                None => local_time::now_label(&zone),
            },
            items: items["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|it| TicketItem {
                    qty: i(it, "qty"),
                    name_en: it["name_en"].as_str().unwrap_or_default().to_string(),
                    name_ar: it["name_ar"].as_str().map(str::to_string),
                    modifiers: it["modifiers"].as_str().map(str::to_string),
                    modifiers_ar: modifiers_ar(
                        store,
                        it["order_line_id"]
                            .as_str()
                            .and_then(|l| codes.get(l))
                            .map(String::as_str),
                        it["modifiers"].as_str(),
                    ),
                    note: it["note"].as_str().map(str::to_string),
                })
                .collect(),
            reprint: request.is_some(),
            job_id: id.clone(),
        };
        let blocks = capsule_print::kitchen_ticket(&ticket);
        enqueue(store, &mut out, printer, &id, "kitchen", batch_id, &blocks)?;
    }
    Ok(out)
}

/// Queues an order's receipt on this node's receipt printer. `request`: a reprint's own id
/// (None: the receipt for the payments so far, printed once however often it is asked for).
pub fn queue_receipt(
    store: &Store,
    order_id: &str,
    request: Option<&str>,
) -> Result<Queued, StoreError> {
    let mut out = Queued::default();
    let order = Value::Object(store.pull("order", order_id, None)?.payload);
    let printers = printers(store)?;
    let printer = receipt_printer(store, &printers);
    let Some(printer) = printer else {
        out.skipped.push("no receipt printer for this till".into());
        return Ok(out);
    };
    let shop = shop_row(store)?;
    let digits = u32::try_from(
        shop.get("currency_digits")
            .and_then(Value::as_i64)
            .unwrap_or(2),
    )
    .unwrap_or(2);
    let payments: Vec<Payment> = order["payments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| Payment {
            method: p["method"].as_str().unwrap_or_default().to_string(),
            amount: i(p, "amount"),
            tendered: p["tendered"].as_i64(),
            change: p["change_due"].as_i64(),
        })
        .collect();
    let cash = payments.iter().any(|p| p.method == "cash");
    let id = match request {
        // The receipt of the order as paid so far: one print per state of payment.
        None => job_id(&["receipt", order_id, &i(&order, "paid_total").to_string()]),
        Some(r) => job_id(&["receipt-reprint", order_id, r]),
    };
    let r = Receipt {
        shop_name: shop["name"].as_str().unwrap_or_default().to_string(),
        address: shop["address"].as_str().map(str::to_string),
        phone: shop["phone"].as_str().map(str::to_string),
        tax_number: shop["tax_number"].as_str().map(str::to_string),
        title: shop["receipt_title"].as_str().map(str::to_string),
        title_ar: shop["receipt_title_ar"].as_str().map(str::to_string),
        lang: ReceiptLang::parse(shop["receipt_lang"].as_str()),
        header: shop["receipt_header"].as_str().map(str::to_string),
        footer: shop["receipt_footer"].as_str().map(str::to_string),
        currency: order["currency"]
            .as_str()
            .or(shop["currency"].as_str())
            .unwrap_or_default()
            .to_string(),
        digits,
        order_label: order_label(&order),
        table: order["table_label"].as_str().map(str::to_string),
        // A paid order's receipt says when it was paid (a copy too); a bill before, now.
        printed_at: match order["closed_at"]
            .as_str()
            .or(order["updated_at"].as_str())
            .filter(|_| matches!(order["status"].as_str(), Some("paid" | "closed")))
        {
            Some(at) => local_time::label(at, &shop_zone(&shop)),
            None => local_time::now_label(&shop_zone(&shop)),
        },
        cashier: order["opened_by"].as_str().map(str::to_string),
        lines: order["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["status"] != "void")
            .map(|l| ReceiptLine {
                qty: i(l, "qty"),
                name_en: l["name_en"].as_str().unwrap_or_default().to_string(),
                name_ar: l["name_ar"].as_str().map(str::to_string),
                modifiers: l["modifiers"].as_str().map(str::to_string),
                modifiers_ar: modifiers_ar(store, l["item_code"].as_str(), l["modifiers"].as_str()),
                total: i(l, "line_total"),
            })
            .collect(),
        subtotal: i(&order, "subtotal"),
        discount: i(&order, "discount_total"),
        service: i(&order, "service_total"),
        tax: i(&order, "tax_total"),
        total: i(&order, "total"),
        payments,
        qr: zatca(&shop, &order, digits),
        reprint: request.is_some(),
        job_id: id.clone(),
        // The drawer opens for cash taken, not for a reprint.
        drawer: cash && request.is_none() && printer.get("drawer") == Some(&Value::Bool(true)),
    };
    let blocks = capsule_print::receipt(&r);
    enqueue(store, &mut out, printer, &id, "receipt", order_id, &blocks)?;
    Ok(out)
}

/// `text` of a deduction, with a minus unless it is zero.
fn minus(text: String, amount: i64) -> String {
    if amount > 0 { format!("-{text}") } else { text }
}

/// An X or Z report as the receipt printer prints it (and as its PDF shows it).
pub fn report_blocks(r: &Report) -> Vec<Block> {
    let d = u32::try_from(r.currency_digits.clamp(0, 3)).unwrap_or(2);
    let m = |v: i64| money(v, d);
    let line = |l: &str, v: String| Block::text(columns(l, &v, COLUMNS));
    let title = match r.number {
        Some(n) => format!("Z REPORT #{n}"),
        None => "X REPORT".to_string(),
    };
    let mut b = vec![
        Block::Text {
            text: r.shop.clone().unwrap_or_default(),
            align: Align::Center,
            bold: true,
            big: true,
        },
        Block::Text {
            text: title,
            align: Align::Center,
            bold: true,
            big: true,
        },
        Block::text(columns(
            &local_time::label(
                &r.taken_at,
                &local_time::zone_or_utc(r.time_zone.as_deref()),
            ),
            r.taken_by.as_deref().unwrap_or(""),
            COLUMNS,
        )),
        Block::text(format!(
            "Business day {}",
            r.business_date.as_deref().unwrap_or("-")
        )),
        Block::Rule,
        line("Orders", r.orders.to_string()),
        line("Guests", r.guests.to_string()),
        line("Items", r.items.to_string()),
        line("Gross sales", m(r.gross_sales)),
        // A minus only before an amount: no "-0.00".
        line("Discounts", minus(m(r.discounts), r.discounts)),
        line("Net sales", m(r.net_sales)),
        line("Service", m(r.service)),
        line("VAT", m(r.tax)),
        Block::Text {
            text: columns(
                "TOTAL",
                &format!("{} {}", r.currency.as_deref().unwrap_or(""), m(r.total)),
                COLUMNS / 2,
            ),
            align: Align::Left,
            bold: true,
            big: true,
        },
        Block::Rule,
    ];
    for p in &r.by_method {
        b.push(line(&format!("{} ({})", p.method, p.count), m(p.amount)));
    }
    b.push(line(
        &format!("Voided orders ({})", r.void_orders),
        m(r.void_orders_amount),
    ));
    b.push(line(
        &format!("Voided lines ({})", r.void_lines),
        m(r.void_lines_amount),
    ));
    b.push(line(
        &format!("Open orders ({})", r.open_orders),
        m(r.open_orders_amount),
    ));
    b.push(Block::Rule);
    b.push(Block::text("BY CATEGORY"));
    for c in &r.by_category {
        b.push(line(&format!("{} x {}", c.qty, c.name_en), m(c.amount)));
    }
    b.push(Block::Rule);
    b.push(Block::text("BY ITEM"));
    for c in &r.by_item {
        b.push(line(&format!("{} x {}", c.qty, c.name_en), m(c.amount)));
    }
    b.push(Block::Rule);
    b.push(Block::text("CASH BY SHIFT (since each shift opened)"));
    for sh in &r.shifts {
        b.push(Block::text(format!("{} ({})", sh.cashier, sh.status)));
        b.push(line("  Expected", m(sh.expected_cash)));
        if let Some(c) = sh.counted_cash {
            b.push(line("  Counted", m(c)));
        }
        if let Some(diff) = sh.difference {
            b.push(line("  Difference", m(diff)));
        }
    }
    b.push(Block::Cut);
    b
}

/// Queues a report on this node's receipt printer.
pub fn queue_report(store: &Store, r: &Report, request: &str) -> Result<Queued, StoreError> {
    let mut out = Queued::default();
    let printers = printers(store)?;
    let Some(printer) = receipt_printer(store, &printers) else {
        out.skipped.push("no receipt printer for this node".into());
        return Ok(out);
    };
    let about = match r.number {
        Some(n) => format!("Z #{n}"),
        None => "X".into(),
    };
    let id = job_id(&["report", &about, request]);
    enqueue(
        store,
        &mut out,
        printer,
        &id,
        "report",
        &about,
        &report_blocks(r),
    )?;
    Ok(out)
}

/// Sends to the printer at `address` once its name resolves to an address the policy allows
/// (and connects to that checked address, not the name again).
async fn send(policy: &PrinterPolicy, address: &str, bytes: &[u8]) -> Result<(), String> {
    let (host, _) = crate::printer_net::split(address)?;
    let resolved: Vec<std::net::SocketAddr> =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host(address))
            .await
            .map_err(|_| format!("printer {address}: its name did not resolve within 3 s"))?
            .map_err(|e| format!("printer {address}: {e}"))?
            .collect();
    let mut refused = None;
    let mut to = None;
    for a in resolved {
        match policy.check_resolved(address, &host, a) {
            Ok(()) => {
                to = Some(a);
                break;
            }
            Err(e) => refused = Some(e),
        }
    }
    let Some(to) = to else {
        return Err(refused.unwrap_or_else(|| format!("printer {address}: no address found")));
    };
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(to))
        .await
        .map_err(|_| format!("printer {address} did not answer within 3 s (off?)"))?
        .map_err(|e| format!("printer {address}: {e}"))?;
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(bytes).await?;
        stream.flush().await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| format!("printer {address} stopped taking data (paper out or cover open?)"))?
    .map_err(|e| format!("printer {address}: {e}"))
}

/// Sends queued jobs one at a time, oldest first; a failed job waits and is tried again
/// (1 s, 2 s, 4 s ... 30 s) while the others keep their turn.
/// This node's printing state that its routes and its sender share: the sender's wake-up,
/// and what it last knew of each printer, which it reports to the shop when it changes (a
/// `printer_status` row, through the node's own write path as its latest router has it).
#[derive(Default)]
pub struct PrintDesk {
    wake: Notify,
    reach: std::sync::Mutex<std::collections::HashMap<String, bool>>,
    writer: std::sync::Mutex<Option<capsule_server::api::MutationHandler>>,
    node_name: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for PrintDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrintDesk(..)")
    }
}

impl PrintDesk {
    /// Wakes the sender: a job was queued or retried.
    pub fn notify_one(&self) {
        self.wake.notify_one();
    }

    /// The node's write path (each router sets its own when it is built: the latest wins).
    pub fn set_writer(&self, writer: capsule_server::api::MutationHandler) {
        *self.writer.lock().unwrap_or_else(|e| e.into_inner()) = Some(writer);
    }

    /// The name staff know this node by, in the states it reports.
    pub fn set_node_name(&self, name: &str) {
        let _ = self.node_name.set(name.to_string());
    }

    /// Notes a try at `printer_id`; when the printer became reachable or unreachable from
    /// here, tells the shop.
    fn note(&self, node_id: &str, printer_id: &str, result: &Result<(), String>) {
        let ok = result.is_ok();
        let changed = self
            .reach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(printer_id.to_string(), ok)
            != Some(ok);
        // Told when it changes, and once after each start (a node restarted after its printer
        // was reported down says it is back): at most a row per printer and node start.
        if !changed {
            return;
        }
        let Some(write) = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let error: Option<String> = result.as_ref().err().map(|e| e.chars().take(300).collect());
        let row = serde_json::json!({
            "id": format!("{node_id}:{printer_id}"),
            "printer_id": printer_id,
            "node_id": node_id,
            "node_name": self.node_name.get(),
            "ok": ok,
            "error": error,
            "since": capsule_protocol::now_rfc3339(),
        });
        let batch = capsule_protocol::MutationBatch {
            mutations: vec![capsule_protocol::Mutation {
                mid: uuid::Uuid::now_v7().to_string(),
                table: "printer_status".into(),
                action: capsule_protocol::Action::Save,
                row: serde_json::from_value(row).unwrap_or_default(),
                base: None,
                by: None,
            }],
            source: None,
        };
        tokio::spawn(async move {
            if let Err(e) = write(batch, String::new()).await {
                tracing::warn!("a printer's state was not reported: {e:?}");
            }
        });
    }
}

/// Queues a test page on printer `printer_id` (its name, this node, the time): a manager
/// setting a printer up sees it print, or why not.
pub fn queue_test(store: &Store, printer_id: &str, request: &str) -> Result<Queued, StoreError> {
    let mut out = Queued::default();
    let printer = store.pull("printer", printer_id, Some("header"))?.payload;
    let zone = shop_zone(&shop_row(store)?);
    let name = printer
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let blocks = vec![
        Block::Text {
            text: name.to_string(),
            align: Align::Center,
            bold: true,
            big: true,
        },
        Block::Text {
            text: "Test print / اختبار الطباعة".into(),
            align: Align::Center,
            bold: false,
            big: false,
        },
        Block::text(columns(
            &local_time::now_label(&zone),
            printer.get("address").and_then(Value::as_str).unwrap_or(""),
            COLUMNS,
        )),
        Block::Cut,
    ];
    let mut row = printer.clone();
    row.insert("id".into(), Value::from(printer_id));
    let id = job_id(&["test", printer_id, request]);
    enqueue(store, &mut out, &row, &id, "test", name, &blocks)?;
    Ok(out)
}

pub async fn run_sender(store: Arc<Store>, desk: Arc<PrintDesk>, policy: Arc<PrinterPolicy>) {
    loop {
        let s = store.clone();
        let due = match tokio::task::spawn_blocking(move || {
            s.expire_print_jobs(capsule_protocol::now_ms())?;
            s.due_print_job()
        })
        .await
        {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "print queue unreadable");
                PrintDue::Later(Some(capsule_protocol::now_ms() + 5_000))
            }
            Err(e) => {
                // A panic in the queue read: log it and keep the sender alive.
                tracing::error!(error = %e, "print queue read failed");
                PrintDue::Later(Some(capsule_protocol::now_ms() + 5_000))
            }
        };
        match due {
            PrintDue::Job(id, printer_id, queued_address, bytes) => {
                // The printer's address as it is now: a corrected address helps queued jobs.
                let s = store.clone();
                let looked_up = printer_id.clone();
                let address = tokio::task::spawn_blocking(move || {
                    s.pull("printer", &looked_up, Some("header"))
                        .ok()
                        .and_then(|p| {
                            p.payload
                                .get("address")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                })
                .await
                .ok()
                .flatten()
                .unwrap_or(queued_address);
                let result = send(&policy, &address, &bytes).await;
                desk.note(store.node_id(), &printer_id, &result);
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || match result {
                    Ok(()) => s.print_done(&id),
                    Err(e) => {
                        let attempts = s.print_attempts(&id).unwrap_or(0).clamp(0, 15);
                        let retry = (1000i64 << attempts).min(MAX_RETRY_MS);
                        tracing::info!(job = %id, error = %e, retry_ms = retry, "print failed");
                        s.print_failed(&id, &e, retry)
                    }
                })
                .await;
            }
            PrintDue::Later(next) => {
                let wait = match next {
                    Some(at) => {
                        let now = capsule_protocol::now_ms();
                        Duration::from_millis(u64::try_from(at - now).unwrap_or(0).max(10))
                    }
                    None => Duration::from_secs(3600),
                };
                let _ = tokio::time::timeout(wait, desk.wake.notified()).await;
            }
        }
    }
}
