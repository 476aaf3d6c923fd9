//! The two documents a shop prints: the customer's receipt and a station's kitchen ticket.

use crate::{Align, Block, money};

#[derive(Debug, Clone, Default)]
pub struct ReceiptLine {
    pub qty: i64,
    pub name_en: String,
    pub name_ar: Option<String>,
    pub modifiers: Option<String>,
    /// The modifiers' Arabic names, where the menu has them.
    pub modifiers_ar: Option<String>,
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

/// The language a receipt is printed in (`shop_settings.receipt_lang`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReceiptLang {
    En,
    Ar,
    #[default]
    Both,
}

impl ReceiptLang {
    pub fn parse(s: Option<&str>) -> ReceiptLang {
        match s {
            Some("en") => ReceiptLang::En,
            Some("ar") => ReceiptLang::Ar,
            _ => ReceiptLang::Both,
        }
    }

    /// A label in this language ("Total / الإجمالي" on a receipt in both).
    fn label(self, en: &str, ar: &str) -> String {
        match self {
            ReceiptLang::En => en.to_string(),
            ReceiptLang::Ar => ar.to_string(),
            ReceiptLang::Both => format!("{en} / {ar}"),
        }
    }

    /// A label and its value on one line: the label on the right on an Arabic receipt.
    fn pair(self, en: &str, ar: &str, value: &str) -> Block {
        let label = self.label(en, ar);
        let (left, right) = match self {
            ReceiptLang::Ar => (value.to_string(), label),
            _ => (label, value.to_string()),
        };
        Block::Pair {
            left,
            right,
            bold: false,
            big: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Receipt {
    pub shop_name: String,
    pub address: Option<String>,
    pub phone: Option<String>,
    pub tax_number: Option<String>,
    /// The document's title ("Simplified Tax Invoice") and its Arabic.
    pub title: Option<String>,
    pub title_ar: Option<String>,
    pub lang: ReceiptLang,
    pub header: Option<String>,
    pub footer: Option<String>,
    pub currency: String,
    pub digits: u32,
    /// "#123" or a provisional "B-7".
    pub order_label: String,
    pub table: Option<String>,
    /// When it was printed, in the shop's local time with the date ("2026-12-07 02:44").
    pub printed_at: String,
    pub cashier: Option<String>,
    pub lines: Vec<ReceiptLine>,
    pub subtotal: i64,
    pub discount: i64,
    pub service: i64,
    pub tax: i64,
    pub total: i64,
    pub payments: Vec<Payment>,
    /// The text of the QR code printed at the foot (a ZATCA invoice's TLV, base64).
    pub qr: Option<String>,
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
    /// The modifiers' Arabic names, where the menu has them.
    pub modifiers_ar: Option<String>,
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

/// The customer's receipt, in the shop's receipt language.
pub fn receipt(r: &Receipt) -> Vec<Block> {
    let mut b = receipt_head(r);
    receipt_lines(r, &mut b);
    receipt_totals(r, &mut b);
    receipt_foot(r, &mut b);
    b
}

/// The shop, the document's title, the order and when.
fn receipt_head(r: &Receipt) -> Vec<Block> {
    let lang = r.lang;
    let mut b = vec![center(&r.shop_name, true, true)];
    for s in [&r.address, &r.phone].into_iter().filter_map(present) {
        b.push(center(s, false, false));
    }
    if let Some(t) = present(&r.tax_number) {
        b.push(center(
            format!("{} {t}", lang.label("VAT No.", "الرقم الضريبي")),
            false,
            false,
        ));
    }
    let title_en = present(&r.title);
    let title_ar = present(&r.title_ar);
    let titles: Vec<&str> = match lang {
        ReceiptLang::En => title_en.into_iter().collect(),
        ReceiptLang::Ar => title_ar.or(title_en).into_iter().collect(),
        ReceiptLang::Both => title_en.into_iter().chain(title_ar).collect(),
    };
    for t in titles {
        b.push(center(t, true, false));
    }
    if let Some(h) = present(&r.header) {
        b.push(center(h, false, false));
    }
    if r.reprint {
        b.push(center(
            format!("*** {} ***", lang.label("COPY", "نسخة")),
            true,
            false,
        ));
    }
    b.push(Block::Rule);
    let table = r
        .table
        .as_deref()
        .map(|t| format!("{} {t}", lang.label("Table", "طاولة")))
        .unwrap_or_default();
    let order = format!("{} {}", lang.label("Order", "طلب"), r.order_label);
    b.push(side_by_side(lang, order, table));
    b.push(side_by_side(
        lang,
        r.printed_at.clone(),
        r.cashier.clone().unwrap_or_default(),
    ));
    b.push(Block::Rule);
    b
}

/// Two texts at the two edges, the first at the reading start (the right, in Arabic).
fn side_by_side(lang: ReceiptLang, first: String, second: String) -> Block {
    let (left, right) = match lang {
        ReceiptLang::Ar => (second, first),
        _ => (first, second),
    };
    Block::Pair {
        left,
        right,
        bold: false,
        big: false,
    }
}

/// The items, named in the receipt's language, with their modifiers.
fn receipt_lines(r: &Receipt, b: &mut Vec<Block>) {
    let m = |v: i64| money(v, r.digits);
    for l in &r.lines {
        let ar = present(&l.name_ar);
        let name = match r.lang {
            ReceiptLang::Ar => ar.unwrap_or(&l.name_en),
            _ => &l.name_en,
        };
        let item = format!("{} x {name}", l.qty);
        b.push(match r.lang {
            ReceiptLang::Ar => Block::Pair {
                left: m(l.total),
                right: item,
                bold: false,
                big: false,
            },
            _ => Block::Pair {
                left: item,
                right: m(l.total),
                bold: false,
                big: false,
            },
        });
        if let (ReceiptLang::Both, Some(ar)) = (r.lang, ar) {
            b.push(right(ar));
        }
        let mods_en = present(&l.modifiers);
        let mods_ar = present(&l.modifiers_ar);
        let mods: Vec<&str> = match r.lang {
            ReceiptLang::En => mods_en.into_iter().collect(),
            ReceiptLang::Ar => mods_ar.or(mods_en).into_iter().collect(),
            ReceiptLang::Both => mods_en.into_iter().chain(mods_ar).collect(),
        };
        for mods in mods {
            if r.lang == ReceiptLang::Ar || !mods.is_ascii() {
                b.push(right(format!("+ {mods}")));
            } else {
                b.push(Block::text(format!("    + {mods}")));
            }
        }
    }
    b.push(Block::Rule);
}

/// Subtotal, discount, service, VAT, the total and the payments.
fn receipt_totals(r: &Receipt, b: &mut Vec<Block>) {
    let lang = r.lang;
    let m = |v: i64| money(v, r.digits);
    b.push(lang.pair("Subtotal", "المجموع", &m(r.subtotal)));
    if r.discount != 0 {
        b.push(lang.pair("Discount", "الخصم", &format!("-{}", m(r.discount))));
    }
    if r.service != 0 {
        b.push(lang.pair("Service", "الخدمة", &m(r.service)));
    }
    b.push(lang.pair("VAT", "ضريبة القيمة المضافة", &m(r.tax)));
    let total = format!("{} {}", r.currency, m(r.total));
    let label = lang.label("TOTAL", "الإجمالي");
    let (left, right) = match lang {
        ReceiptLang::Ar => (total, label),
        _ => (label, total),
    };
    b.push(Block::Pair {
        left,
        right,
        bold: true,
        big: true,
    });
    for p in &r.payments {
        let (en, ar) = if p.method == "cash" {
            ("Cash", "نقدًا")
        } else {
            ("Card", "بطاقة")
        };
        b.push(lang.pair(en, ar, &m(p.amount)));
        if let Some(t) = p.tendered.filter(|t| *t != p.amount) {
            b.push(lang.pair("  Tendered", "المدفوع", &m(t)));
        }
        if let Some(c) = p.change.filter(|c| *c > 0) {
            b.push(lang.pair("  Change", "الباقي", &m(c)));
        }
    }
    b.push(Block::Rule);
}

/// The QR code, the footer, the job's id, the drawer and the cut.
fn receipt_foot(r: &Receipt, b: &mut Vec<Block>) {
    if let Some(qr) = present(&r.qr) {
        b.push(Block::Qr(qr.to_string()));
    }
    if let Some(f) = present(&r.footer) {
        b.push(center(f, false, false));
    }
    b.push(center(format!("job {}", short(&r.job_id)), false, false));
    if r.drawer {
        b.push(Block::Drawer);
    }
    b.push(Block::Cut);
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
        // The cooks read either language: the modifiers in Arabic too, where the menu has it.
        if let Some(mods) = present(&i.modifiers_ar) {
            b.push(right(format!("+ {mods}")));
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
