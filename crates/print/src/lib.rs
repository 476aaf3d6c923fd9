//! Printing for Capsule POS: receipts and kitchen tickets as ESC/POS bytes for 80 mm network
//! printers (Epson TM and compatibles on raw TCP port 9100), and back.
//!
//! Thermal printers have no Arabic shaping, so every line that is not plain ASCII is shaped here
//! (HarfBuzz's algorithm via `rustybuzz`, bidi runs via `unicode-bidi`) with a font we ship
//! (`fonts/`), rasterised, and sent as a raster image (`GS v 0`). ASCII lines go as text in the
//! printer's own font. [`decode`] reads the bytes back (the tests' virtual printer, the
//! dashboard's preview) and [`render_png`] draws them as the paper would look.
//!
//! [`report_pdf()`] is the other way an X or Z report leaves the node: an A4 PDF with real text
//! (selectable, searchable, Arabic shaped), for the manager's desk rather than the printer.

mod decode;
mod report_pdf;
mod shape;
mod tickets;
mod zatca;

pub use decode::{Element, decode, render, render_pdf, render_png};
pub use report_pdf::{
    A4_POINTS, ReportSheet, SheetMethod, SheetSales, SheetShift, SheetStaff, report_pdf,
};
pub use shape::{Bitmap, raster_line, text_width, wrap};
pub use tickets::{
    KitchenTicket, Payment, Receipt, ReceiptLang, ReceiptLine, TicketItem, kitchen_ticket, receipt,
};
pub use zatca::{ZatcaInvoice, parse_tlv, zatca_qr};

use escpos::driver::Driver;
use escpos::printer::Printer;
use escpos::utils::{JustifyMode, Protocol};

/// Printable width of 80 mm paper at 203 dpi, in dots.
pub const PAPER_DOTS: u32 = 576;
/// Characters per line in the printer's font A (12 x 24 dots).
pub const COLUMNS: usize = 48;
/// Height of one text line of font A, in dots.
pub const LINE_DOTS: u32 = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Center,
    Right,
}

/// One block of a printed document, top to bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A line of text; `big` is double width and height.
    Text {
        text: String,
        align: Align,
        bold: bool,
        big: bool,
    },
    /// Two texts on one line, one at each edge (a label and its amount): on an Arabic receipt
    /// the label is on the right. A left text too long for the room beside the right one
    /// wraps onto more lines.
    Pair {
        left: String,
        right: String,
        bold: bool,
        big: bool,
    },
    /// A QR code of the text, centred (a ZATCA receipt's).
    Qr(String),
    /// A dashed rule across the paper.
    Rule,
    /// Feed n blank lines.
    Feed(u8),
    /// Open the cash drawer (pin 2).
    Drawer,
    /// Cut the paper (after feeding it past the cutter).
    Cut,
}

impl Block {
    pub fn text(text: impl Into<String>) -> Block {
        Block::Text {
            text: text.into(),
            align: Align::Left,
            bold: false,
            big: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    #[error("ESC/POS encoding failed: {0}")]
    Encode(String),
    #[error("PDF writing failed: {0}")]
    Pdf(String),
}

/// Collects what the printer would be sent (escpos writes through a driver).
#[derive(Clone, Default)]
struct Capture(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Driver for Capture {
    fn name(&self) -> String {
        "capture".into()
    }
    fn write(&self, data: &[u8]) -> escpos::errors::Result<()> {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(())
    }
    fn read(&self, _buf: &mut [u8]) -> escpos::errors::Result<usize> {
        Ok(0)
    }
    fn flush(&self) -> escpos::errors::Result<()> {
        Ok(())
    }
}

/// `GS v 0`: a raster bit image, 1 bit per dot, rows of `ceil(width / 8)` bytes.
fn raster_command(b: &Bitmap) -> Vec<u8> {
    let wb = b.width.div_ceil(8);
    let mut cmd = vec![
        0x1D,
        b'v',
        b'0',
        0,
        (wb & 0xFF) as u8,
        (wb >> 8) as u8,
        (b.height & 0xFF) as u8,
        (b.height >> 8) as u8,
    ];
    cmd.extend_from_slice(&b.bits);
    cmd
}

/// Control characters as spaces: text from the data never becomes a printer command.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The height of a rasterised line of text.
fn raster_height(big: bool) -> u32 {
    if big { 2 * LINE_DOTS } else { LINE_DOTS + 4 }
}

/// A label and an amount as pictures of the paper's width, one at each edge: the wider of
/// the two (the label) wraps into the room beside the other, which stays on the first line.
fn pair_rasters(left: &str, right: &str, height: u32, bold: bool) -> Vec<Bitmap> {
    let gap = LINE_DOTS;
    let (lw, rw) = (text_width(left, height), text_width(right, height));
    let (fixed, fixed_align, wrapping, wrap_align) = if rw > lw {
        (left, Align::Left, right, Align::Right)
    } else {
        (right, Align::Right, left, Align::Left)
    };
    let fixed_w = (lw.min(rw).ceil() as u32).min(PAPER_DOTS);
    let room = PAPER_DOTS.saturating_sub(fixed_w + gap).max(PAPER_DOTS / 3);
    let mut lines = wrap(wrapping, height, room);
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let part = raster_line(l, height, room, wrap_align, bold);
            // The wrapping text keeps to its own edge of the paper.
            let offset = if wrap_align == Align::Right {
                PAPER_DOTS - room
            } else {
                0
            };
            let mut b = place(&part, PAPER_DOTS, offset);
            if i == 0 {
                let f = raster_line(fixed, height, PAPER_DOTS, fixed_align, bold);
                for (dst, src) in b.bits.iter_mut().zip(&f.bits) {
                    *dst |= src;
                }
            }
            b
        })
        .collect()
}

/// `b` on a canvas `width` dots wide, `offset` dots from its left.
fn place(b: &Bitmap, width: u32, offset: u32) -> Bitmap {
    let mut out = Bitmap::new(width, b.height);
    for y in 0..b.height {
        for x in 0..b.width {
            if b.get(x, y) {
                out.set(x + offset, y);
            }
        }
    }
    out
}

/// A QR code of `data` as a picture centred on the paper, 5 dots a module (about 3 cm for a
/// ZATCA code: what a phone reads at arm's length).
fn qr_bitmap(data: &str) -> Result<Bitmap, PrintError> {
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| PrintError::Encode(format!("QR code: {e}")))?;
    let n = u32::try_from(code.width()).unwrap_or(0);
    let quiet = 4;
    let scale = (PAPER_DOTS / (n + 2 * quiet)).clamp(1, 5);
    let side = (n + 2 * quiet) * scale;
    let x0 = (PAPER_DOTS - side.min(PAPER_DOTS)) / 2;
    let mut b = Bitmap::new(PAPER_DOTS, side);
    let colors = code.to_colors();
    for (i, c) in colors.iter().enumerate() {
        if *c != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (i as u32 % n, i as u32 / n);
        for dy in 0..scale {
            for dx in 0..scale {
                b.set(x0 + (mx + quiet) * scale + dx, (my + quiet) * scale + dy);
            }
        }
    }
    Ok(b)
}

/// Encodes a document as ESC/POS bytes for an 80 mm printer.
pub fn encode(blocks: &[Block]) -> Result<Vec<u8>, PrintError> {
    let capture = Capture::default();
    let e = |e: escpos::errors::PrinterError| PrintError::Encode(e.to_string());
    let mut p = Printer::new(capture.clone(), Protocol::default(), None);
    p.init().map_err(e)?;
    for b in blocks {
        match b {
            Block::Text {
                text,
                align,
                bold,
                big,
            } => {
                // Text from the data never carries printer commands (a note with ESC p would
                // open the drawer on every copy): control characters print as spaces.
                let text = &printable(text);
                let mode = match align {
                    Align::Left => JustifyMode::LEFT,
                    Align::Center => JustifyMode::CENTER,
                    Align::Right => JustifyMode::RIGHT,
                };
                if text.is_ascii() {
                    p.justify(mode).map_err(e)?;
                    p.bold(*bold).map_err(e)?;
                    let n = if *big { 2 } else { 1 };
                    p.size(n, n).map_err(e)?;
                    p.write(text).map_err(e)?;
                    p.custom(b"\n").map_err(e)?;
                    p.size(1, 1).map_err(e)?;
                    p.bold(false).map_err(e)?;
                } else {
                    // The printer cannot shape it: a picture of the line, as wide as the paper,
                    // wrapped so nothing runs off it.
                    let px = raster_height(*big);
                    p.justify(JustifyMode::LEFT).map_err(e)?;
                    for l in wrap(text, px, PAPER_DOTS) {
                        let bitmap = raster_line(&l, px, PAPER_DOTS, *align, *bold);
                        p.custom(&raster_command(&bitmap)).map_err(e)?;
                    }
                }
            }
            Block::Pair {
                left,
                right,
                bold,
                big,
            } => {
                let left = printable(left);
                let right = printable(right);
                if left.is_ascii() && right.is_ascii() {
                    // Double width holds half the columns.
                    let (n, width) = if *big { (2, COLUMNS / 2) } else { (1, COLUMNS) };
                    p.justify(JustifyMode::LEFT).map_err(e)?;
                    p.bold(*bold).map_err(e)?;
                    p.size(n, n).map_err(e)?;
                    p.write(&columns(&left, &right, width)).map_err(e)?;
                    p.custom(b"\n").map_err(e)?;
                    p.size(1, 1).map_err(e)?;
                    p.bold(false).map_err(e)?;
                } else {
                    p.justify(JustifyMode::LEFT).map_err(e)?;
                    for bitmap in pair_rasters(&left, &right, raster_height(*big), *bold) {
                        p.custom(&raster_command(&bitmap)).map_err(e)?;
                    }
                }
            }
            Block::Qr(data) => {
                p.justify(JustifyMode::LEFT).map_err(e)?;
                p.custom(&raster_command(&qr_bitmap(data)?)).map_err(e)?;
            }
            Block::Rule => {
                p.justify(JustifyMode::LEFT).map_err(e)?;
                p.write(&"-".repeat(COLUMNS)).map_err(e)?;
                p.custom(b"\n").map_err(e)?;
            }
            Block::Feed(n) => {
                p.feeds(*n).map_err(e)?;
            }
            // escpos's cash_drawer sends `ESC p 0` without the two pulse times the command
            // takes, so a printer would swallow the next two bytes: the full command here.
            Block::Drawer => {
                p.custom(&[0x1B, b'p', 0, 25, 250]).map_err(e)?;
            }
            Block::Cut => {
                p.feeds(4).map_err(e)?;
                p.cut().map_err(e)?;
            }
        }
    }
    p.print().map_err(e)?;
    let bytes = capture.0.borrow().clone();
    Ok(bytes)
}

/// `left` and `right` on one line of `width` columns (right-aligned), shortening `left`.
pub fn columns(left: &str, right: &str, width: usize) -> String {
    let rw = right.chars().count();
    let room = width.saturating_sub(rw + 1);
    let l: String = left.chars().take(room).collect();
    let pad = width.saturating_sub(l.chars().count() + rw);
    format!("{l}{}{right}", " ".repeat(pad))
}

/// `minor` units as a decimal in `digits` (1850, 2 -> "18.50"), exact.
pub use capsule_protocol::minor_to_decimal as money;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_survives_the_round_trip_and_arabic_becomes_a_picture() {
        let doc = vec![
            Block::Text {
                text: "Capsule Grill".into(),
                align: Align::Center,
                bold: true,
                big: true,
            },
            Block::text("2 x Hummus"),
            Block::text("حمص بالطحينة 2"),
            Block::Rule,
            Block::Drawer,
            Block::Cut,
        ];
        let bytes = encode(&doc).unwrap();
        let els = decode(&bytes).unwrap();
        let texts: Vec<&str> = els
            .iter()
            .filter_map(|e| match e {
                Element::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(texts[0], "Capsule Grill");
        assert_eq!(texts[1], "2 x Hummus");
        assert_eq!(texts[2], "-".repeat(COLUMNS));
        assert!(matches!(
            els[0],
            Element::Text {
                bold: true,
                big: true,
                ..
            }
        ));
        let raster = els
            .iter()
            .find_map(|e| match e {
                Element::Raster(b) => Some(b),
                _ => None,
            })
            .expect("the Arabic line is a raster image");
        assert_eq!(raster.width, PAPER_DOTS);
        assert!(raster.ink() > 200, "the line has ink: {}", raster.ink());
        assert!(els.contains(&Element::Drawer));
        assert_eq!(els.last(), Some(&Element::Cut));
        let png = render_png(&els);
        assert!(png.starts_with(b"\x89PNG"));
    }

    #[test]
    fn arabic_is_shaped_and_laid_right_to_left() {
        // Joined letters take less room than the same letters isolated: shaping happened.
        let joined = raster_line("سمبوسك", 32, 400, Align::Left, false);
        let isolated = raster_line("س م ب و س ك", 32, 400, Align::Left, false);
        assert!(joined.ink_extent().1 < isolated.ink_extent().1);
        // Right-aligned Arabic ends at the right margin.
        let right = raster_line("كنافة", 32, 400, Align::Right, false);
        let (start, end) = right.ink_extent();
        assert!(end >= 390 && start > 200, "{start}..{end}");
        // Digits inside Arabic keep their order (bidi): "12" is not drawn as "21".
        let twelve = raster_line("12", 32, 400, Align::Left, false);
        assert!(twelve.ink() > 0);
    }

    #[test]
    fn columns_and_money_are_exact() {
        assert_eq!(columns("Hummus", "15.00", 20), "Hummus         15.00");
        assert_eq!(
            columns("A very long item name indeed", "1.00", 16),
            "A very long 1.00"
        );
        assert_eq!(money(1850, 2), "18.50");
        assert_eq!(money(-5, 3), "-0.005");
        assert_eq!(money(7, 0), "7");
    }

    #[test]
    fn text_from_the_data_never_becomes_a_printer_command() {
        let bytes = encode(&[Block::text("no onion\u{1b}p\u{0}AA\tspicy\u{1d}V\u{0}")]).unwrap();
        let els = decode(&bytes).unwrap();
        assert!(!els.contains(&Element::Drawer) && !els.contains(&Element::Cut));
        assert!(
            matches!(&els[0], Element::Text { text, .. } if text.starts_with("no onion p AA spicy"))
        );
    }
}

#[cfg(test)]
mod wrap_tests {
    use super::*;

    /// Ink of every raster line of a document, as the printer would print it.
    fn printed_ink(blocks: &[Block]) -> (u32, usize) {
        let elements = decode(&encode(blocks).unwrap()).unwrap();
        let rasters: Vec<&Bitmap> = elements
            .iter()
            .filter_map(|e| match e {
                Element::Raster(b) => Some(b),
                _ => None,
            })
            .collect();
        assert!(rasters.iter().all(|b| b.width == PAPER_DOTS));
        (rasters.iter().map(|b| b.ink()).sum(), rasters.len())
    }

    #[test]
    fn a_long_arabic_line_wraps_within_the_paper_and_loses_nothing() {
        let long = "صحن مشاوي مشكلة كبير مع الأرز والسلطة والخبز والصلصات الخاصة بالمطعم وطبق جانبي من الحمص";
        let height = raster_height(false);
        assert!(
            text_width(long, height) > PAPER_DOTS as f32,
            "the test's line is longer than the paper"
        );
        // All of it, drawn on a canvas wide enough: the ink the paper must show.
        let whole = raster_line(long, height, 4 * PAPER_DOTS, Align::Right, false).ink();
        for align in [Align::Right, Align::Left] {
            let (ink, lines) = printed_ink(&[Block::Text {
                text: long.into(),
                align,
                bold: false,
                big: false,
            }]);
            assert!(lines >= 2, "{lines} lines");
            // Words shaped apart and placed at other fractions of a dot: within 5% of the ink.
            assert!(
                ink.abs_diff(whole) * 20 <= whole,
                "{align:?}: printed {ink} dots of {whole}"
            );
        }
        // A label with its amount: the label wraps beside the amount, nothing lost.
        let (ink, lines) = printed_ink(&[Block::Pair {
            left: "126.50".into(),
            right: long.into(),
            bold: false,
            big: false,
        }]);
        let amount = raster_line("126.50", height, PAPER_DOTS, Align::Left, false).ink();
        assert!(lines >= 2);
        assert!(
            (ink - amount).abs_diff(whole) * 20 <= whole,
            "printed {ink} dots, {} expected",
            whole + amount
        );
    }
}
