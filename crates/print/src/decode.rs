//! Reads ESC/POS bytes back into what a printer would do with them (the subset [`crate::encode`]
//! writes), and draws that as a PNG of the paper: how the tests and the dashboard see a ticket.

use crate::shape::raster_line;
use crate::{Align, Bitmap, LINE_DOTS, PAPER_DOTS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    Text {
        text: String,
        align: Align,
        bold: bool,
        big: bool,
    },
    Raster(Bitmap),
    Feed(u8),
    Drawer,
    Cut,
}

/// The buffered text as a printed line (the buffer is emptied).
fn line(text: &mut Vec<u8>, align: Align, bold: bool, big: bool) -> Element {
    let t = String::from_utf8_lossy(text).into_owned();
    text.clear();
    Element::Text {
        text: t,
        align,
        bold,
        big,
    }
}

/// Decodes `bytes`; an unknown command is an error naming its offset.
pub fn decode(bytes: &[u8]) -> Result<Vec<Element>, String> {
    let mut out = Vec::new();
    let (mut align, mut bold, mut big) = (Align::Left, false, false);
    let mut text = Vec::new();
    let mut i = 0;
    let need = |i: usize, n: usize| -> Result<(), String> {
        if i + n > bytes.len() {
            Err(format!("command at {i} is cut short"))
        } else {
            Ok(())
        }
    };
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\n' => {
                out.push(line(&mut text, align, bold, big));
                i += 1;
            }
            0x1B => {
                need(i, 2)?;
                match bytes[i + 1] {
                    b'@' => {
                        (align, bold, big) = (Align::Left, false, false);
                        i += 2;
                    }
                    b'a' | b'E' | b'd' | b't' | b'M' | b'-' => {
                        need(i, 3)?;
                        let n = bytes[i + 2];
                        match bytes[i + 1] {
                            b'a' => {
                                align = match n {
                                    1 | b'1' => Align::Center,
                                    2 | b'2' => Align::Right,
                                    _ => Align::Left,
                                }
                            }
                            b'E' => bold = n & 1 == 1,
                            b'd' => {
                                // Feeding prints what is buffered first.
                                if !text.is_empty() {
                                    out.push(line(&mut text, align, bold, big));
                                }
                                out.push(Element::Feed(n));
                            }
                            _ => {}
                        }
                        i += 3;
                    }
                    b'p' => {
                        need(i, 5)?;
                        out.push(Element::Drawer);
                        i += 5;
                    }
                    c => return Err(format!("unknown command ESC {c:#04x} at {i}")),
                }
            }
            0x1D => {
                need(i, 3)?;
                match bytes[i + 1] {
                    b'!' => {
                        big = bytes[i + 2] != 0;
                        i += 3;
                    }
                    b'V' => {
                        out.push(Element::Cut);
                        i += if matches!(bytes[i + 2], b'A' | b'B') {
                            4
                        } else {
                            3
                        };
                    }
                    b'v' => {
                        need(i, 8)?;
                        let wb = u32::from(bytes[i + 4]) | u32::from(bytes[i + 5]) << 8;
                        let h = u32::from(bytes[i + 6]) | u32::from(bytes[i + 7]) << 8;
                        let n = (wb * h) as usize;
                        need(i + 8, n)?;
                        out.push(Element::Raster(Bitmap {
                            width: wb * 8,
                            height: h,
                            bits: bytes[i + 8..i + 8 + n].to_vec(),
                        }));
                        i += 8 + n;
                    }
                    c => return Err(format!("unknown command GS {c:#04x} at {i}")),
                }
            }
            0x20..=0x7E => {
                text.push(b);
                i += 1;
            }
            c => return Err(format!("unexpected byte {c:#04x} at {i}")),
        }
    }
    Ok(out)
}

/// The paper as a picture: 576 dots wide plus margins, one bit per dot.
pub fn render(elements: &[Element]) -> Bitmap {
    const MARGIN: u32 = 16;
    let mut rows: Vec<Bitmap> = Vec::new();
    for e in elements {
        match e {
            Element::Text {
                text,
                align,
                bold,
                big,
            } => {
                let h = if *big { 2 * LINE_DOTS } else { LINE_DOTS };
                rows.push(raster_line(text, h, PAPER_DOTS, *align, *bold));
            }
            Element::Raster(b) => rows.push(b.clone()),
            Element::Feed(n) => rows.push(Bitmap::new(PAPER_DOTS, u32::from(*n) * LINE_DOTS)),
            Element::Drawer => {}
            Element::Cut => {
                let mut b = Bitmap::new(PAPER_DOTS, 9);
                for x in (0..PAPER_DOTS).filter(|x| x % 12 < 6) {
                    b.set(x, 4);
                }
                rows.push(b);
            }
        }
    }
    let width = PAPER_DOTS + 2 * MARGIN;
    let height = rows.iter().map(|r| r.height).sum::<u32>() + 2 * MARGIN;
    let mut page = Bitmap::new(width, height);
    let mut y0 = MARGIN;
    for r in &rows {
        for y in 0..r.height {
            for x in 0..r.width.min(PAPER_DOTS) {
                if r.get(x, y) {
                    page.set(MARGIN + x, y0 + y);
                }
            }
        }
        y0 += r.height;
    }
    page
}

/// The paper as a PNG (white, black ink).
pub fn render_png(elements: &[Element]) -> Vec<u8> {
    let page = render(elements);
    let mut pixels = Vec::with_capacity((page.width * page.height) as usize);
    for y in 0..page.height {
        for x in 0..page.width {
            pixels.push(if page.get(x, y) { 0u8 } else { 255 });
        }
    }
    let mut png = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png, page.width, page.height);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().expect("in-memory PNG");
        w.write_image_data(&pixels).expect("in-memory PNG");
    }
    png
}

/// The paper as a one-page PDF, printed at the paper's own size (80 mm wide, 203 dpi).
///
/// Written by hand rather than with a PDF crate: the page is one 1-bit image, which takes
/// five small objects, and every PDF library would add a large dependency tree for it.
pub fn render_pdf(elements: &[Element]) -> Vec<u8> {
    let page = render(elements);
    // 203 dots per inch, 72 points per inch.
    let (w_pt, h_pt) = (
        page.width as f64 * 72.0 / 203.0,
        page.height as f64 * 72.0 / 203.0,
    );
    let content = format!("q {w_pt:.2} 0 0 {h_pt:.2} 0 0 cm /Im0 Do Q\n");
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w_pt:.2} {h_pt:.2}] \
             /Resources << /XObject << /Im0 5 0 R >> >> /Contents 4 0 R >>"
        )
        .into_bytes(),
        [
            format!("<< /Length {} >>\nstream\n", content.len()).into_bytes(),
            content.into_bytes(),
            b"endstream".to_vec(),
        ]
        .concat(),
        [
            format!(
                "<< /Type /XObject /Subtype /Image /Width {} /Height {} /ColorSpace /DeviceGray \
                 /BitsPerComponent 1 /Decode [1 0] /Length {} >>\nstream\n",
                page.width,
                page.height,
                page.bits.len()
            )
            .into_bytes(),
            page.bits.clone(),
            b"\nendstream".to_vec(),
        ]
        .concat(),
    ];
    let mut pdf = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::new();
    for (n, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n", n + 1).as_bytes());
        pdf.extend_from_slice(body);
        pdf.extend_from_slice(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}
