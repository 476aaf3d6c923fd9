//! The two documents a shop prints: the customer's receipt and a station's kitchen ticket.

use crate::{Align, Block, COLUMNS, columns, money};

#[derive(Debug, Clone, Default)]
pub struct ReceiptLine {
    pub qty: i64,
    pub name_en: String,
    pub name_ar: Option<String>,
    pub modifiers: Option<String>,
    /// The line's total as the core computed it.
    pub total: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Payment {
    pub method: String,
    pub amount: i64,
    pub tendered: Option<i64>,
    pub change: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct Receipt {
    pub shop_name: String,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub tax_number: Option<String>,
    pub header: Option<String>,
    pub footer: Option<String>,
    pub currency: String,
    pub digits: u32,
    /// "#123" or a provisional "B-7".
    pub order_label: String,
    pub table: Option<String>,
    /// When it was printed, UTC, as staff read it ("2026-12-03 17:40 UTC").
    pub printed_at: String,
    pub cashier: Option<String>,
    pub lines: Vec<ReceiptLine>,
    pub subtotal: i64,
    pub discount: i64,
    pub service: i64,
    pub tax: i64,
    pub total: i64,
    pub payments: Vec<Payment>,
    pub reprint: bool,
    /// The print job's id, printed small: the same id twice on paper is one job printed twice.
    pub job_id: String,
    /// Kick the cash drawer (a cash payment on a printer with a drawer).
    pub drawer: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TicketItem {
    pub qty: i64,
    pub name_en: String,
    pub name_ar: Option<String>,
    pub modifiers: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct KitchenTicket {
    pub station: String,
    pub order_label: String,
    pub table: Option<String>,
    /// A later round of the same order: the cook must see it is more, not a repeat.
    pub addition: bool,
    pub batch_no: i64,
    pub printed_at: String,
    pub items: Vec<TicketItem>,
    pub reprint: bool,
    pub job_id: String,
}

fn center(text: impl Into<String>, bold: bool, big: bool) -> Block {
    Block::Text {
        text: text.into(),
        align: Align::Center,
        bold,
        big,
    }
}

fn right(text: impl Into<String>) -> Block {
    Block::Text {
        text: text.into(),
        align: Align::Right,
        bold: false,
        big: false,
    }
}

fn present(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The customer's receipt.
pub fn receipt(r: &Receipt) -> Vec<Block> {
    let m = |v: i64| money(v, r.digits);
    let mut b = vec![center(&r.shop_name, true, true)];
    for s in [&r.address, &r.phone].into_iter().filter_map(present) {
        b.push(center(s, false, false));
    }
    if let Some(t) = present(&r.tax_number) {
        b.push(center(format!("VAT No. {t}"), false, false));
    }
    if let Some(h) = present(&r.header) {
        b.push(center(h, false, false));
    }
    if r.reprint {
        b.push(center("*** COPY ***", true, false));
    }
    b.push(Block::Rule);
    let table = r
        .table
        .as_deref()
        .map(|t| format!("Table {t}"))
        .unwrap_or_default();
    b.push(Block::text(columns(
        &format!("Order {}", r.order_label),
        &table,
        COLUMNS,
    )));
    b.push(Block::text(columns(
        &r.printed_at,
        r.cashier.as_deref().unwrap_or(""),
        COLUMNS,
    )));
    b.push(Block::Rule);
    for l in &r.lines {
        b.push(Block::text(columns(
            &format!("{} x {}", l.qty, l.name_en),
            &m(l.total),
            COLUMNS,
        )));
        if let Some(ar) = present(&l.name_ar) {
            b.push(right(ar));
        }
        if let Some(mods) = present(&l.modifiers) {
            b.push(Block::text(format!("    + {mods}")));
        }
    }
    b.push(Block::Rule);
    b.push(Block::text(columns("Subtotal", &m(r.subtotal), COLUMNS)));
    if r.discount != 0 {
        b.push(Block::text(columns(
            "Discount",
            &format!("-{}", m(r.discount)),
            COLUMNS,
        )));
    }
    if r.service != 0 {
        b.push(Block::text(columns("Service", &m(r.service), COLUMNS)));
    }
    b.push(Block::text(columns("VAT", &m(r.tax), COLUMNS)));
    b.push(Block::Text {
        text: columns(
            "TOTAL",
            &format!("{} {}", r.currency, m(r.total)),
            COLUMNS / 2,
        ),
        align: Align::Left,
        bold: true,
        big: true,
    });
    for p in &r.payments {
        let label = if p.method == "cash" { "Cash" } else { "Card" };
        b.push(Block::text(columns(label, &m(p.amount), COLUMNS)));
        if let Some(t) = p.tendered.filter(|t| *t != p.amount) {
            b.push(Block::text(columns("  Tendered", &m(t), COLUMNS)));
        }
        if let Some(c) = p.change.filter(|c| *c > 0) {
            b.push(Block::text(columns("  Change", &m(c), COLUMNS)));
        }
    }
    b.push(Block::Rule);
    if let Some(f) = present(&r.footer) {
        b.push(center(f, false, false));
    }
    b.push(center(format!("job {}", short(&r.job_id)), false, false));
    if r.drawer {
        b.push(Block::Drawer);
    }
    b.push(Block::Cut);
    b
}

/// A station's ticket for one round of an order.
pub fn kitchen_ticket(t: &KitchenTicket) -> Vec<Block> {
    let mut b = vec![center(t.station.to_uppercase(), true, true)];
    if t.addition {
        b.push(center(
            format!("** ADDITION (round {}) **", t.batch_no),
            true,
            true,
        ));
    }
    if t.reprint {
        b.push(center("** REPRINT **", true, false));
    }
    let table = t
        .table
        .as_deref()
        .map(|s| format!("  {s}"))
        .unwrap_or_default();
    b.push(Block::Text {
        text: format!("{}{table}", t.order_label),
        align: Align::Left,
        bold: true,
        big: true,
    });
    b.push(Block::text(t.printed_at.clone()));
    b.push(Block::Rule);
    for i in &t.items {
        b.push(Block::Text {
            text: format!("{} x {}", i.qty, i.name_en),
            align: Align::Left,
            bold: true,
            big: true,
        });
        if let Some(ar) = present(&i.name_ar) {
            b.push(Block::Text {
                text: ar.to_string(),
                align: Align::Right,
                bold: false,
                big: true,
            });
        }
        if let Some(mods) = present(&i.modifiers) {
            b.push(Block::text(format!("   + {mods}")));
        }
        if let Some(n) = present(&i.note) {
            b.push(Block::text(format!("   ! {n}")));
        }
    }
    b.push(Block::Rule);
    b.push(Block::text(format!("job {}", short(&t.job_id))));
    b.push(Block::Cut);
    b
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
