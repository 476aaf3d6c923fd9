//! Printing for Capsule POS: receipts and kitchen tickets as ESC/POS bytes for 80 mm network
//! printers (Epson TM and compatibles on raw TCP port 9100), and back.
//!
//! Thermal printers have no Arabic shaping, so every line that is not plain ASCII is shaped here
//! (HarfBuzz's algorithm via `rustybuzz`, bidi runs via `unicode-bidi`) with a font we ship
//! (`fonts/`), rasterised, and sent as a raster image (`GS v 0`). ASCII lines go as text in the
//! printer's own font. [`decode`] reads the bytes back (the tests' virtual printer, the
//! dashboard's preview) and [`render_png`] draws them as the paper would look.

mod decode;
mod shape;
mod tickets;

pub use decode::{Element, decode, render, render_pdf, render_png};
pub use shape::{Bitmap, raster_line};
pub use tickets::{
    KitchenTicket, Payment, Receipt, ReceiptLine, TicketItem, kitchen_ticket, receipt,
};

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
                let text: String = text
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                let text = &text;
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
                    // The printer cannot shape it: a picture of the line, as wide as the paper.
                    let px = if *big { 2 * LINE_DOTS } else { LINE_DOTS + 4 };
                    let bitmap = raster_line(text, px, PAPER_DOTS, *align, *bold);
                    p.justify(JustifyMode::LEFT).map_err(e)?;
                    p.custom(&raster_command(&bitmap)).map_err(e)?;
                }
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
