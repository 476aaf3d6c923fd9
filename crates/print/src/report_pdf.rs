//! The X and Z reports as an A4 PDF for the manager's desk: real text (selectable, searchable,
//! Arabic shaped and right to left), the totals, and tables that run onto further pages.
//!
//! Three phases: [`shape`] turns a line of text into glyph runs (bidi runs in visual order,
//! each stretch in the font that has its letters, shaped with `rustybuzz`); the [`Sheet`] lays
//! the report's sections out on numbered pages with those measures; [`paint`] writes the pages
//! with `krilla`, which subsets and embeds the fonts with each glyph's Unicode text, so a
//! viewer can select and find every word. The slip the receipt printer prints is another
//! thing (`report_blocks` in the node, 48 columns of 80 mm paper).

use std::ops::Range;

use capsule_protocol::{local_time, minor_to_decimal};
use krilla::Document;
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::metadata::Metadata;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::surface::Surface;
use krilla::text::{Font, GlyphId, KrillaGlyph};
use unicode_bidi::BidiInfo;

use crate::shape::{ARABIC, font_segments, wrap_with};
use crate::{Align, PrintError};

/// DejaVu Sans and DejaVu Sans Bold (`fonts/LICENSE-DejaVu.txt`): the report's Latin text.
static SANS: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
static SANS_BOLD: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");

/// A4 in PDF points (1/72 inch): 210 x 297 mm.
pub const A4_POINTS: (f32, f32) = (595.28, 841.89);
/// Left and right margin, and the top one (17 mm).
const MARGIN: f32 = 48.0;
/// Where the page's text ends, above the footer.
const BOTTOM: f32 = A4_POINTS.1 - 62.0;
/// Body text size, and the height of one line of it.
const BODY: f32 = 9.0;
const LINE: f32 = 13.0;
/// Room between a table cell's text and the next column.
const PAD: f32 = 4.0;
/// Noto Sans Arabic draws its letters smaller than DejaVu Sans at the same size: scaled so an
/// Arabic name reads as large as the English beside it.
const ARABIC_SCALE: f32 = 1.2;
const BLACK: (u8, u8, u8) = (0, 0, 0);
const GREY: (u8, u8, u8) = (95, 99, 107);
const LIGHT: (u8, u8, u8) = (205, 209, 215);
const BAND: (u8, u8, u8) = (238, 240, 243);

/// An X or Z report's figures as the A4 PDF shows them: the node fills it from the store's
/// report (the print crate does not depend on the store). Money in minor units of `currency`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportSheet {
    /// A Z report's number; `None` for an X report.
    pub number: Option<i64>,
    pub shop: String,
    /// When it was taken, RFC 3339 UTC: shown in `time_zone` (IANA; UTC when unknown).
    pub taken_at: String,
    pub time_zone: Option<String>,
    pub taken_by: Option<String>,
    pub currency: String,
    /// Decimal places of the currency (0-3).
    pub currency_digits: u32,
    pub orders: i64,
    pub guests: i64,
    pub items: i64,
    pub gross_sales: i64,
    /// Discounts given, as a positive amount.
    pub discounts: i64,
    pub net_sales: i64,
    pub service: i64,
    pub tax: i64,
    pub total: i64,
    pub paid: i64,
    pub by_method: Vec<SheetMethod>,
    pub void_orders: i64,
    pub void_orders_amount: i64,
    pub void_lines: i64,
    pub void_lines_amount: i64,
    pub open_orders: i64,
    pub open_orders_amount: i64,
    pub by_category: Vec<SheetSales>,
    pub by_item: Vec<SheetSales>,
    pub shifts: Vec<SheetShift>,
    pub staff: Vec<SheetStaff>,
}

/// One payment method: how many payments, and their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SheetMethod {
    pub method: String,
    pub count: i64,
    pub amount: i64,
}

/// One row of "by category" or "by item": line totals after line discounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SheetSales {
    pub name_en: String,
    pub name_ar: Option<String>,
    pub qty: i64,
    pub amount: i64,
}

/// One shift's cash, over the shift's whole life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SheetShift {
    pub cashier: String,
    /// RFC 3339 UTC.
    pub opened_at: String,
    /// `None` while the shift is open.
    pub closed_at: Option<String>,
    pub opening_float: i64,
    pub cash_sales: i64,
    pub card_sales: i64,
    pub expected_cash: i64,
    pub counted_cash: Option<i64>,
    /// Counted less expected: negative is a shortage.
    pub difference: Option<i64>,
}

/// One member of staff: payments taken and time worked in the day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SheetStaff {
    pub name: String,
    pub name_ar: Option<String>,
    pub payments: i64,
    pub amount: i64,
    /// Seconds clocked in less breaks, and seconds of breaks.
    pub worked_s: i64,
    pub break_s: i64,
    /// Clocked in now.
    pub clocked_in: bool,
}

/// The report as an A4 PDF (as many pages as its tables need).
pub fn report_pdf(r: &ReportSheet) -> Result<Vec<u8>, PrintError> {
    let fonts = Fonts::load()?;
    let mut sheet = Sheet::new(&fonts);
    content(&mut sheet, r);
    let named = |sep: &str| match r.shop.trim() {
        "" => title(r),
        shop => format!("{}{sep}{shop}", title(r)),
    };
    let pages = sheet.finish(&named(" · "));
    paint(&fonts, &pages, &named(" - "))
}

fn title(r: &ReportSheet) -> String {
    match r.number {
        Some(n) => format!("Z REPORT #{n}"),
        None => "X REPORT".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Shaping: a line of text as glyph runs, each in one font.

/// The report's fonts: for shaping (rustybuzz) and for the PDF (krilla), in the same order.
struct Fonts {
    faces: [rustybuzz::Face<'static>; 3],
    pdf: [Font; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Face {
    Regular = 0,
    Bold = 1,
    Arabic = 2,
}

impl Fonts {
    fn load() -> Result<Fonts, PrintError> {
        let data = [SANS, SANS_BOLD, ARABIC];
        let bad = || PrintError::Pdf("a bundled font did not load".into());
        let face = |d: &'static [u8]| rustybuzz::Face::from_slice(d, 0).ok_or_else(bad);
        let font = |d: &'static [u8]| Font::new(d.into(), 0).ok_or_else(bad);
        Ok(Fonts {
            faces: [face(data[0])?, face(data[1])?, face(data[2])?],
            pdf: [font(data[0])?, font(data[1])?, font(data[2])?],
        })
    }
}

/// Glyphs of one font, left to right; `text` is the stretch they draw (their ranges index it).
#[derive(Debug, Clone)]
struct Run {
    face: Face,
    text: String,
    glyphs: Vec<KrillaGlyph>,
    /// Where the run starts, from the start of the line, and its font size (points).
    x: f32,
    size: f32,
}

/// A shaped line and its width in points.
#[derive(Debug, Clone)]
struct Shaped {
    runs: Vec<Run>,
    width: f32,
}

/// Shapes `text` at `size` points: bidi runs in visual order; in each, Arabic letters in Noto
/// Sans Arabic and the rest in DejaVu Sans (bold when asked), a right-to-left run's stretches
/// laid out last first.
fn shape(fonts: &Fonts, text: &str, size: f32, bold: bool) -> Shaped {
    let info = BidiInfo::new(text, None);
    let mut runs = Vec::new();
    let mut pen = 0.0f32;
    for para in &info.paragraphs {
        let (levels, visual) = info.visual_runs(para, para.range.clone());
        for range in visual {
            let rtl = levels[range.start].is_rtl();
            let mut segments = font_segments(&text[range]);
            if rtl {
                segments.reverse();
            }
            for (s, arabic) in segments {
                let face = match (arabic, bold) {
                    (true, _) => Face::Arabic,
                    (false, true) => Face::Bold,
                    (false, false) => Face::Regular,
                };
                let size = if arabic { size * ARABIC_SCALE } else { size };
                let run = shape_run(fonts, face, s, rtl, pen, size);
                pen += run.glyphs.iter().map(|g| g.x_advance * size).sum::<f32>();
                runs.push(run);
            }
        }
    }
    Shaped { runs, width: pen }
}

/// One stretch in one font and direction; each glyph carries the text of its cluster.
fn shape_run(fonts: &Fonts, face: Face, s: &str, rtl: bool, x: f32, size: f32) -> Run {
    let f = &fonts.faces[face as usize];
    let mut buf = rustybuzz::UnicodeBuffer::new();
    buf.push_str(s);
    buf.guess_segment_properties();
    buf.set_direction(if rtl {
        rustybuzz::Direction::RightToLeft
    } else {
        rustybuzz::Direction::LeftToRight
    });
    let shaped = rustybuzz::shape(f, &[], buf);
    let em = f.units_per_em() as f32;
    let mut starts: Vec<usize> = shaped
        .glyph_infos()
        .iter()
        .map(|g| g.cluster as usize)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    let cluster = |start: usize| -> Range<usize> {
        let end = starts.iter().find(|&&c| c > start).copied();
        start..end.unwrap_or(s.len())
    };
    let glyphs = shaped
        .glyph_infos()
        .iter()
        .zip(shaped.glyph_positions())
        .map(|(g, p)| {
            KrillaGlyph::new(
                GlyphId::new(g.glyph_id),
                p.x_advance as f32 / em,
                p.x_offset as f32 / em,
                p.y_offset as f32 / em,
                p.y_advance as f32 / em,
                cluster(g.cluster as usize),
                None,
            )
        })
        .collect();
    Run {
        face,
        text: s.to_string(),
        glyphs,
        x,
        size,
    }
}

// ---------------------------------------------------------------------------------------------
// Layout: marks on pages, top to bottom.

/// What is drawn on a page (y grows down the page, in points).
#[derive(Debug, Clone)]
enum Mark {
    /// A shaped line with its left end at `x` and its baseline at `y`.
    Text {
        x: f32,
        y: f32,
        line: Shaped,
        grey: bool,
    },
    /// A horizontal rule.
    Rule {
        x0: f32,
        x1: f32,
        y: f32,
        width: f32,
        dark: bool,
    },
    /// A light band behind a table's header.
    Band { rect: (f32, f32, f32, f32) },
}

/// One column of a table: its heading, its share of the table's width and its alignment.
struct Col {
    head: &'static str,
    share: f32,
    align: Align,
}

const fn col(head: &'static str, share: f32, align: Align) -> Col {
    Col { head, share, align }
}

/// One row of a table (bold for a total).
struct Row {
    cells: Vec<String>,
    bold: bool,
}

fn row(cells: Vec<String>) -> Row {
    Row { cells, bold: false }
}

/// A titled table, its text `size` points; columns with no heading at all show no header
/// row.
struct Table {
    title: String,
    note: Option<&'static str>,
    size: f32,
    cols: Vec<Col>,
    rows: Vec<Row>,
}

/// Lays marks out page by page; `y` is the top of the next line.
struct Sheet<'f> {
    fonts: &'f Fonts,
    pages: Vec<Vec<Mark>>,
    y: f32,
}

impl<'f> Sheet<'f> {
    fn new(fonts: &'f Fonts) -> Sheet<'f> {
        Sheet {
            fonts,
            pages: vec![Vec::new()],
            y: MARGIN,
        }
    }

    fn mark(&mut self, m: Mark) {
        self.pages.last_mut().expect("a page").push(m);
    }

    /// Starts a new page unless `height` more points fit on this one; true when it did.
    fn room(&mut self, height: f32) -> bool {
        if self.y + height <= BOTTOM {
            return false;
        }
        self.pages.push(Vec::new());
        self.y = MARGIN;
        true
    }

    /// One line of text in `span` at `y`: see [`text_mark`].
    fn text(&mut self, t: &str, span: (f32, f32), align: Align, style: (f32, bool, bool)) {
        let m = text_mark(self.fonts, t, span, self.y, align, style);
        self.mark(m);
    }

    /// A rule across `span` at `y`; a dark one under a heading, a light one between rows.
    fn rule(&mut self, (x0, x1): (f32, f32), width: f32, dark: bool) {
        let y = self.y;
        self.mark(Mark::Rule {
            x0,
            x1,
            y,
            width,
            dark,
        });
    }

    /// `t` wrapped to fit `width` points at `size`.
    fn wrap(&self, t: &str, width: f32, size: f32, bold: bool) -> Vec<String> {
        if t.is_empty() {
            return vec![String::new()];
        }
        wrap_with(t, |s| shape(self.fonts, s, size, bold).width <= width)
    }

    /// Puts the footer on every page (the page count is known only now) and hands them over.
    fn finish(self, footer: &str) -> Vec<Vec<Mark>> {
        let n = self.pages.len();
        let span = (MARGIN, A4_POINTS.0 - MARGIN);
        let small = (7.5, false, true);
        let top = BOTTOM + 24.0;
        let mut pages = self.pages;
        for (i, page) in pages.iter_mut().enumerate() {
            let (x0, x1) = span;
            page.push(Mark::Rule {
                x0,
                x1,
                y: top,
                width: 0.5,
                dark: false,
            });
            page.push(text_mark(
                self.fonts,
                footer,
                span,
                top + 5.0,
                Align::Left,
                small,
            ));
            let count = format!("Page {} of {n}", i + 1);
            page.push(text_mark(
                self.fonts,
                &count,
                span,
                top + 5.0,
                Align::Right,
                small,
            ));
        }
        pages
    }
}

/// One line of text in `x0..x1`, aligned there, its baseline `size` below `top`; `style` is
/// (size, bold, grey).
fn text_mark(
    fonts: &Fonts,
    t: &str,
    (x0, x1): (f32, f32),
    top: f32,
    align: Align,
    style: (f32, bool, bool),
) -> Mark {
    let (size, bold, grey) = style;
    let line = shape(fonts, t, size, bold);
    let x = match align {
        Align::Left => x0,
        Align::Center => x0 + ((x1 - x0) - line.width) / 2.0,
        Align::Right => x1 - line.width,
    };
    Mark::Text {
        x,
        y: top + size,
        line,
        grey,
    }
}

// ---------------------------------------------------------------------------------------------
// Tables.

impl Sheet<'_> {
    /// A table in `span`: its title, note and header (again on every page it runs onto), then
    /// its rows, each as tall as its most wrapped cell.
    fn table(&mut self, t: &Table, span: (f32, f32)) {
        let widths: Vec<f32> = t.cols.iter().map(|c| c.share * (span.1 - span.0)).collect();
        let heads: Vec<String> = t.cols.iter().map(|c| c.head.to_string()).collect();
        let head = self.cells_height(&heads, &widths, (t.size - 1.0, true));
        let first = t.rows.first().map_or(LINE, |r| {
            self.cells_height(&r.cells, &widths, (t.size, r.bold))
        });
        self.room(36.0 + head + first);
        self.table_head(t, span, &widths, false);
        if t.rows.is_empty() {
            self.text("None", span, Align::Left, (t.size, false, true));
            self.y += LINE + 4.0;
        }
        for r in &t.rows {
            if self.room(self.cells_height(&r.cells, &widths, (t.size, r.bold)) + 4.0) {
                self.table_head(t, span, &widths, true);
            }
            let style = (t.size, r.bold, false);
            self.cells(&t.cols, &r.cells, span, &widths, style);
            self.y += 1.0;
            self.rule(span, if r.bold { 0.8 } else { 0.3 }, r.bold);
            self.y += 3.0;
        }
        self.y += 14.0;
    }

    /// The table's title (and note, the first time), and the header row unless no column has
    /// a heading.
    fn table_head(&mut self, t: &Table, span: (f32, f32), widths: &[f32], again: bool) {
        let title = if again {
            format!("{} (continued)", t.title)
        } else {
            t.title.clone()
        };
        self.text(&title, span, Align::Left, (11.5, true, false));
        self.y += 18.0;
        if let Some(note) = t.note.filter(|_| !again) {
            self.text(note, span, Align::Left, (7.5, false, true));
            self.y += 12.0;
        }
        if t.cols.iter().any(|c| !c.head.is_empty()) {
            let heads: Vec<String> = t.cols.iter().map(|c| c.head.to_string()).collect();
            let style = (t.size - 1.0, true, true);
            let height = self.cells_height(&heads, widths, (style.0, true));
            let rect = (span.0, self.y, span.1, self.y + height + 4.0);
            self.mark(Mark::Band { rect });
            self.y += 2.0;
            self.cells(&t.cols, &heads, span, widths, style);
            self.y += 2.0;
        }
        self.rule(span, 0.8, true);
        self.y += 3.0;
    }

    /// How tall a row of `cells` is once each is wrapped to its column.
    fn cells_height(&self, cells: &[String], widths: &[f32], (size, bold): (f32, bool)) -> f32 {
        let lines = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| self.wrap(c, w - 2.0 * PAD, size, bold).len())
            .max()
            .unwrap_or(1);
        lines as f32 * leading(size)
    }

    /// A row of cells, each wrapped within its column and aligned as the column says; `y`
    /// ends below the tallest.
    fn cells(
        &mut self,
        cols: &[Col],
        cells: &[String],
        span: (f32, f32),
        widths: &[f32],
        style: (f32, bool, bool),
    ) {
        let (top, mut bottom, mut x) = (self.y, self.y, span.0);
        for ((c, cell), w) in cols.iter().zip(cells).zip(widths) {
            self.y = top;
            for line in self.wrap(cell, w - 2.0 * PAD, style.0, style.1) {
                self.text(&line, (x + PAD, x + w - PAD), c.align, style);
                self.y += leading(style.0);
            }
            bottom = bottom.max(self.y);
            x += w;
        }
        self.y = bottom;
    }
}

/// The height of a line of text `size` points tall.
fn leading(size: f32) -> f32 {
    size * 1.45
}

// ---------------------------------------------------------------------------------------------
// The report's content.

/// Money as the report shows it.
fn money(r: &ReportSheet, v: i64) -> String {
    minor_to_decimal(v, r.currency_digits)
}

/// The report's sections, top to bottom.
fn content(s: &mut Sheet<'_>, r: &ReportSheet) {
    heading(s, r);
    let full = (MARGIN, A4_POINTS.0 - MARGIN);
    let mid = (full.0 + full.1) / 2.0;
    // Totals on the left; payments, voids and open orders beside them (below them should the
    // totals have run onto another page).
    let (left, right) = ((full.0, mid - 14.0), (mid + 14.0, full.1));
    let (top, first) = (s.y, s.pages.len());
    s.table(&totals(r), left);
    let (left_y, left_pages) = (s.y, s.pages.len());
    if left_pages == first {
        s.y = top;
    }
    s.table(&methods(r), right);
    s.table(&voids(r), right);
    if s.pages.len() == left_pages {
        s.y = s.y.max(left_y);
    }
    s.table(
        &sales("Sales by category", "Category", &r.by_category, r),
        full,
    );
    s.table(&sales("Sales by item", "Item", &r.by_item, r), full);
    s.table(&shifts(r), full);
    s.table(&staff(r), full);
}

/// Title, shop, when and by whom, and the currency.
fn heading(s: &mut Sheet<'_>, r: &ReportSheet) {
    let full = (MARGIN, A4_POINTS.0 - MARGIN);
    s.text(&title(r), full, Align::Left, (20.0, true, false));
    s.y += 28.0;
    if !r.shop.trim().is_empty() {
        s.text(&r.shop, full, Align::Left, (14.0, false, false));
        s.y += 22.0;
    }
    let zone = local_time::zone_or_utc(r.time_zone.as_deref());
    let tz = r.time_zone.as_deref().filter(|z| !z.trim().is_empty());
    let taken = format!(
        "Taken at {} ({})",
        local_time::label(&r.taken_at, &zone),
        tz.unwrap_or("UTC")
    );
    s.text(&taken, full, Align::Left, (BODY, false, false));
    s.y += LINE;
    let by = r
        .taken_by
        .as_deref()
        .filter(|b| !b.is_empty())
        .unwrap_or("—");
    s.text(
        &format!("Taken by {by}"),
        full,
        Align::Left,
        (BODY, false, false),
    );
    s.y += LINE;
    if !r.currency.is_empty() {
        let c = format!("Amounts in {}", r.currency);
        s.text(&c, full, Align::Left, (BODY, false, true));
        s.y += LINE;
    }
    s.y += 6.0;
    s.rule(full, 1.2, true);
    s.y += 14.0;
}

fn totals(r: &ReportSheet) -> Table {
    let m = |v| money(r, v);
    // A minus only before an amount: no "-0.00".
    let discounts = if r.discounts > 0 {
        format!("-{}", m(r.discounts))
    } else {
        m(r.discounts)
    };
    let pair = |l: &str, v: String| row(vec![l.to_string(), v]);
    let mut rows = vec![
        pair("Orders", r.orders.to_string()),
        pair("Guests", r.guests.to_string()),
        pair("Items", r.items.to_string()),
        pair("Gross sales", m(r.gross_sales)),
        pair("Discounts", discounts),
        pair("Net sales", m(r.net_sales)),
        pair("Service", m(r.service)),
        pair("VAT", m(r.tax)),
    ];
    let total = format!("{} {}", r.currency, m(r.total));
    rows.push(Row {
        cells: vec!["TOTAL".into(), total.trim().to_string()],
        bold: true,
    });
    rows.push(pair("Paid", m(r.paid)));
    Table {
        title: "Totals".into(),
        note: None,
        size: BODY,
        cols: vec![col("", 0.55, Align::Left), col("", 0.45, Align::Right)],
        rows,
    }
}

fn methods(r: &ReportSheet) -> Table {
    let rows = r
        .by_method
        .iter()
        .map(|p| {
            row(vec![
                p.method.clone(),
                p.count.to_string(),
                money(r, p.amount),
            ])
        })
        .collect();
    Table {
        title: "Payments by method".into(),
        note: None,
        size: BODY,
        cols: vec![
            col("Method", 0.40, Align::Left),
            col("Payments", 0.25, Align::Right),
            col("Amount", 0.35, Align::Right),
        ],
        rows,
    }
}

fn voids(r: &ReportSheet) -> Table {
    let line = |l: &str, n: i64, v: i64| row(vec![l.to_string(), n.to_string(), money(r, v)]);
    Table {
        title: "Voids and open orders".into(),
        note: Some("Open orders are not in the totals."),
        size: BODY,
        cols: vec![
            col("", 0.40, Align::Left),
            col("Count", 0.25, Align::Right),
            col("Amount", 0.35, Align::Right),
        ],
        rows: vec![
            line("Voided orders", r.void_orders, r.void_orders_amount),
            line("Voided lines", r.void_lines, r.void_lines_amount),
            line("Open orders", r.open_orders, r.open_orders_amount),
        ],
    }
}

fn sales(title: &str, what: &'static str, rows: &[SheetSales], r: &ReportSheet) -> Table {
    let rows = rows
        .iter()
        .map(|x| {
            row(vec![
                x.name_en.clone(),
                x.name_ar.clone().unwrap_or_default(),
                x.qty.to_string(),
                money(r, x.amount),
            ])
        })
        .collect();
    Table {
        title: title.into(),
        note: Some("Line totals after line discounts, before order discounts, service and VAT."),
        size: BODY,
        cols: vec![
            col(what, 0.40, Align::Left),
            col("Arabic name", 0.32, Align::Right),
            col("Qty", 0.10, Align::Right),
            col("Amount", 0.18, Align::Right),
        ],
        rows,
    }
}

fn shifts(r: &ReportSheet) -> Table {
    let zone = local_time::zone_or_utc(r.time_zone.as_deref());
    let m = |v| money(r, v);
    let rows = r
        .shifts
        .iter()
        .map(|sh| {
            row(vec![
                sh.cashier.clone(),
                local_time::label(&sh.opened_at, &zone),
                sh.closed_at
                    .as_deref()
                    .map_or("open".into(), |c| local_time::label(c, &zone)),
                m(sh.opening_float),
                m(sh.cash_sales),
                m(sh.card_sales),
                m(sh.expected_cash),
                sh.counted_cash.map_or("—".into(), m),
                sh.difference.map_or("—".into(), m),
            ])
        })
        .collect();
    Table {
        title: "Cash by shift".into(),
        note: Some(
            "Each shift over its whole life, since it opened. Difference: counted less expected.",
        ),
        // Nine columns: a size smaller, so an amount of 100,000.00 still fits its column.
        size: BODY - 1.0,
        cols: vec![
            col("Cashier", 0.14, Align::Left),
            col("Opened", 0.12, Align::Left),
            col("Closed", 0.12, Align::Left),
            col("Float", 0.09, Align::Right),
            col("Cash sales", 0.10, Align::Right),
            col("Card sales", 0.10, Align::Right),
            col("Expected", 0.11, Align::Right),
            col("Counted", 0.11, Align::Right),
            col("Difference", 0.11, Align::Right),
        ],
        rows,
    }
}

/// Seconds as hours and minutes: 27000 -> "7:30".
fn hours(s: i64) -> String {
    let m = s.max(0) / 60;
    format!("{}:{:02}", m / 60, m % 60)
}

fn staff(r: &ReportSheet) -> Table {
    let rows = r
        .staff
        .iter()
        .map(|p| {
            let name = if p.clocked_in {
                format!("{} (clocked in)", p.name)
            } else {
                p.name.clone()
            };
            row(vec![
                name,
                p.name_ar.clone().unwrap_or_default(),
                p.payments.to_string(),
                money(r, p.amount),
                hours(p.worked_s),
                hours(p.break_s),
            ])
        })
        .collect();
    Table {
        title: "Staff takings and hours".into(),
        note: Some("Hours as h:mm: time clocked in less breaks, in entries closed in the day."),
        size: BODY,
        cols: vec![
            col("Name", 0.28, Align::Left),
            col("Arabic name", 0.22, Align::Right),
            col("Payments", 0.12, Align::Right),
            col("Takings", 0.14, Align::Right),
            col("Worked", 0.12, Align::Right),
            col("Breaks", 0.12, Align::Right),
        ],
        rows,
    }
}

// ---------------------------------------------------------------------------------------------
// Painting: the pages as PDF.

fn fill((r, g, b): (u8, u8, u8)) -> Fill {
    Fill {
        paint: rgb::Color::new(r, g, b).into(),
        ..Fill::default()
    }
}

/// Writes the laid-out pages as an A4 PDF.
fn paint(fonts: &Fonts, pages: &[Vec<Mark>], title: &str) -> Result<Vec<u8>, PrintError> {
    let mut doc = Document::new();
    doc.set_metadata(
        Metadata::new()
            .title(title.to_string())
            .creator("Capsule POS".into()),
    );
    let size = PageSettings::from_wh(A4_POINTS.0, A4_POINTS.1)
        .ok_or_else(|| PrintError::Pdf("bad page size".into()))?;
    for marks in pages {
        let mut page = doc.start_page_with(size.clone());
        let mut surface = page.surface();
        for m in marks {
            paint_mark(fonts, &mut surface, m);
        }
        surface.finish();
        page.finish();
    }
    doc.finish().map_err(|e| PrintError::Pdf(e.to_string()))
}

fn paint_mark(fonts: &Fonts, surface: &mut Surface<'_>, m: &Mark) {
    match m {
        Mark::Text { x, y, line, grey } => {
            surface.set_fill(Some(fill(if *grey { GREY } else { BLACK })));
            for run in &line.runs {
                surface.draw_glyphs(
                    Point::from_xy(x + run.x, *y),
                    &run.glyphs,
                    fonts.pdf[run.face as usize].clone(),
                    &run.text,
                    run.size,
                    false,
                );
            }
        }
        Mark::Rule {
            x0,
            x1,
            y,
            width,
            dark,
        } => {
            let mut p = PathBuilder::new();
            p.move_to(*x0, *y);
            p.line_to(*x1, *y);
            if let Some(path) = p.finish() {
                let (r, g, b) = if *dark { GREY } else { LIGHT };
                surface.set_fill(None);
                surface.set_stroke(Some(Stroke {
                    paint: rgb::Color::new(r, g, b).into(),
                    width: *width,
                    ..Stroke::default()
                }));
                surface.draw_path(&path);
                surface.set_stroke(None);
            }
        }
        Mark::Band { rect: (l, t, r, b) } => {
            let mut p = PathBuilder::new();
            if let Some(rect) = Rect::from_ltrb(*l, *t, *r, *b) {
                p.push_rect(rect);
            }
            if let Some(path) = p.finish() {
                surface.set_fill(Some(fill(BAND)));
                surface.draw_path(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Z report with Arabic names, a discount, a short drawer and enough items for a second
    /// page.
    pub(crate) fn sample() -> ReportSheet {
        let sales = |en: &str, ar: &str, qty: i64, amount: i64| SheetSales {
            name_en: en.into(),
            name_ar: (!ar.is_empty()).then(|| ar.to_string()),
            qty,
            amount,
        };
        let mut by_item = vec![
            sales("Chicken shawarma", "شاورما دجاج", 23, 12_650),
            sales("Falafel wrap", "لفافة فلافل", 12, 4_200),
            sales("Mint lemonade", "ليمون بالنعناع", 18, 3_600),
            sales("Hummus", "حمص", 9, 2_250),
        ];
        for i in 1..=60 {
            by_item.push(sales(
                &format!("Special of the day {i}"),
                "طبق اليوم",
                i,
                i * 150,
            ));
        }
        ReportSheet {
            number: Some(7),
            shop: "Capsule Café Riyadh".into(),
            taken_at: "2026-05-12T20:30:00Z".into(),
            time_zone: Some("Asia/Riyadh".into()),
            taken_by: Some("Sara".into()),
            currency: "SAR".into(),
            currency_digits: 2,
            orders: 41,
            guests: 77,
            items: 126,
            gross_sales: 23_700,
            discounts: 500,
            net_sales: 23_200,
            service: 0,
            tax: 3_480,
            total: 26_680,
            paid: 26_680,
            by_method: vec![
                SheetMethod {
                    method: "cash".into(),
                    count: 20,
                    amount: 14_030,
                },
                SheetMethod {
                    method: "card".into(),
                    count: 22,
                    amount: 12_650,
                },
            ],
            void_orders: 1,
            void_orders_amount: 1_150,
            void_lines: 2,
            void_lines_amount: 700,
            open_orders: 3,
            open_orders_amount: 4_400,
            by_category: vec![
                sales("Sandwiches", "سندويشات", 35, 16_850),
                sales("Drinks", "مشروبات", 18, 3_600),
                sales("Starters", "", 9, 2_250),
            ],
            by_item,
            shifts: vec![SheetShift {
                cashier: "Sara".into(),
                opened_at: "2026-05-12T06:00:00Z".into(),
                closed_at: Some("2026-05-12T20:20:00Z".into()),
                opening_float: 20_000,
                cash_sales: 14_030,
                card_sales: 12_650,
                expected_cash: 34_030,
                counted_cash: Some(33_530),
                difference: Some(-500),
            }],
            staff: vec![
                SheetStaff {
                    name: "Sara".into(),
                    name_ar: Some("سارة".into()),
                    payments: 30,
                    amount: 19_380,
                    worked_s: 8 * 3600 + 15 * 60,
                    break_s: 1800,
                    clocked_in: false,
                },
                SheetStaff {
                    name: "Omar".into(),
                    name_ar: None,
                    payments: 12,
                    amount: 7_300,
                    worked_s: 4 * 3600,
                    break_s: 0,
                    clocked_in: true,
                },
            ],
        }
    }

    /// The PDF's text as a PDF reader extracts it (lopdf: each font's ToUnicode map), spaces
    /// and line breaks as single spaces, and each page's MediaBox.
    fn read_back(pdf: &[u8]) -> (String, Vec<Vec<f32>>) {
        let doc = lopdf::Document::load_mem(pdf).expect("a PDF lopdf reads");
        let pages: Vec<u32> = doc.get_pages().keys().copied().collect();
        let text = doc.extract_text(&pages).expect("text");
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let boxes = doc
            .get_pages()
            .values()
            .map(|id| {
                let page = doc.get_dictionary(*id).expect("page");
                let media = page
                    .get(b"MediaBox")
                    .and_then(|b| b.as_array())
                    .expect("MediaBox");
                media
                    .iter()
                    .map(|v| v.as_float().expect("number"))
                    .collect()
            })
            .collect();
        (text, boxes)
    }

    /// Right-to-left text as a PDF holds it: in visual order, last letter first (a viewer
    /// puts it back in reading order; a lam-alef ligature would keep its two letters' order).
    fn visual(s: &str) -> String {
        s.chars().rev().collect()
    }

    #[test]
    fn a4_pages_with_searchable_text() {
        let pdf = report_pdf(&sample()).unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test-artifacts");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/report-a4-sample.pdf"), &pdf).unwrap();

        let (text, boxes) = read_back(&pdf);
        // 64 items do not fit one page: the table runs on, its header again.
        assert!(boxes.len() >= 2, "{} pages", boxes.len());
        for b in &boxes {
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            assert!(
                (w - 595.0).abs() <= 1.0 && (h - 842.0).abs() <= 1.0,
                "{b:?} is not A4"
            );
        }
        for want in [
            "Z REPORT #7",
            "Capsule Café Riyadh",
            // 20:30 UTC in Riyadh (UTC+3).
            "Taken at 2026-05-12 23:30 (Asia/Riyadh)",
            "Taken by Sara",
            "Net sales 232.00",
            "Discounts -5.00",
            "TOTAL SAR 266.80",
            "card 22 126.50",
            "Voided orders 1 11.50",
            "Open orders 3 44.00",
            "Sales by item (continued)",
            "Chicken shawarma",
            &visual("شاورما دجاج"),
            "126.50",
            "Cash by shift",
            "-5.00",
            "Staff takings and hours",
            "Sara",
            "8:15",
            "Omar (clocked in)",
            &format!("Page 1 of {}", boxes.len()),
        ] {
            assert!(
                text.contains(want),
                "{want:?} not in the PDF's text: {text}"
            );
        }
    }

    /// Where poppler is installed, its `pdftotext` (what desktop search and most viewers use)
    /// reads the Arabic name back in reading order.
    #[test]
    fn pdftotext_reads_arabic_in_reading_order() {
        let pdf = report_pdf(&sample()).unwrap();
        let dir = tempfile_dir();
        let path = dir.join("report.pdf");
        std::fs::write(&path, &pdf).unwrap();
        let Ok(out) = std::process::Command::new("pdftotext")
            .arg(&path)
            .arg("-")
            .output()
        else {
            eprintln!("pdftotext is not installed: skipped");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("شاورما دجاج"), "{text}");
        assert!(text.contains("Net sales"), "{text}");
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("capsule-report-pdf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Joined letters, right to left, in the Arabic font: no boxes, no isolated forms.
    #[test]
    fn arabic_is_shaped_right_to_left() {
        let fonts = Fonts::load().unwrap();
        let line = shape(&fonts, "شاورما", BODY, false);
        let [run] = &line.runs[..] else {
            panic!("one run: {:?}", line.runs.len())
        };
        assert_eq!(run.face, Face::Arabic);
        let ids: Vec<u32> = run.glyphs.iter().map(|g| g.glyph_id.to_u32()).collect();
        assert!(ids.iter().all(|&g| g != 0), "a missing glyph: {ids:?}");
        // Left to right on the page is last letter first.
        let starts: Vec<usize> = run.glyphs.iter().map(|g| g.text_range.start).collect();
        assert!(starts.windows(2).all(|w| w[0] > w[1]), "{starts:?}");
        // The first letter, sheen, joins the next: not the glyph it has on its own.
        let alone = shape(&fonts, "ش", BODY, false).runs[0].glyphs[0].glyph_id;
        assert_ne!(run.glyphs.last().unwrap().glyph_id, alone);
        // Latin beside Arabic: each in its own font.
        let mixed = shape(&fonts, "Shawarma شاورما 2", BODY, true);
        let faces: Vec<Face> = mixed.runs.iter().map(|r| r.face).collect();
        assert!(
            faces.contains(&Face::Bold) && faces.contains(&Face::Arabic),
            "{faces:?}"
        );
    }

    /// An X report with nothing in it: one page, every section saying so, and no "-0.00".
    #[test]
    fn empty_x_report() {
        let r = ReportSheet {
            shop: "Shop".into(),
            taken_at: "2026-05-12T08:00:00Z".into(),
            currency: "KWD".into(),
            currency_digits: 3,
            ..ReportSheet::default()
        };
        let (text, boxes) = read_back(&report_pdf(&r).unwrap());
        assert_eq!(boxes.len(), 1);
        for want in [
            "X REPORT",
            "Taken at 2026-05-12 08:00 (UTC)",
            "Discounts 0.000",
            "TOTAL KWD 0.000",
            "Sales by item",
            "None",
        ] {
            assert!(text.contains(want), "{want:?} not in {text}");
        }
        assert!(!text.contains("-0.000"), "{text}");
    }

    #[test]
    fn hours_and_minutes() {
        assert_eq!(hours(0), "0:00");
        assert_eq!(hours(27_000), "7:30");
        assert_eq!(hours(3_599), "0:59");
        assert_eq!(hours(-5), "0:00");
    }
}
