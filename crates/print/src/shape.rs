//! One line of text (Arabic, or anything the printer's code page lacks) shaped and drawn as
//! a 1-bit picture: bidi runs in visual order, each shaped with the font for its script.

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use unicode_bidi::BidiInfo;

use crate::Align;

/// Noto Sans Arabic (SIL OFL 1.1, `fonts/LICENSE-Noto.txt`).
pub(crate) static ARABIC: &[u8] = include_bytes!("../fonts/NotoSansArabic-Regular.ttf");
/// DejaVu Sans Mono (`fonts/LICENSE-DejaVu.txt`): Latin runs, digits, and previews of the
/// printer's own text.
pub(crate) static MONO: &[u8] = include_bytes!("../fonts/DejaVuSansMono.ttf");

/// A 1-bit picture, rows of `ceil(width / 8)` bytes, most significant bit first (the layout
/// of ESC/POS raster images); a set bit is ink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub width: u32,
    pub height: u32,
    pub bits: Vec<u8>,
}

impl Bitmap {
    pub fn new(width: u32, height: u32) -> Bitmap {
        Bitmap {
            width,
            height,
            bits: vec![0; (width.div_ceil(8) * height) as usize],
        }
    }

    pub fn get(&self, x: u32, y: u32) -> bool {
        if x >= self.width || y >= self.height {
            return false;
        }
        let i = (y * self.width.div_ceil(8) + x / 8) as usize;
        self.bits[i] & (0x80 >> (x % 8)) != 0
    }

    pub fn set(&mut self, x: u32, y: u32) {
        if x < self.width && y < self.height {
            let i = (y * self.width.div_ceil(8) + x / 8) as usize;
            self.bits[i] |= 0x80 >> (x % 8);
        }
    }

    /// Dots of ink.
    pub fn ink(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// First and last column with ink ((0, 0) when blank).
    pub fn ink_extent(&self) -> (u32, u32) {
        let cols: Vec<u32> = (0..self.width)
            .filter(|&x| (0..self.height).any(|y| self.get(x, y)))
            .collect();
        (
            cols.first().copied().unwrap_or(0),
            cols.last().copied().unwrap_or(0),
        )
    }
}

fn is_arabic(c: char) -> bool {
    matches!(c as u32, 0x0600..=0x06FF | 0x0750..=0x077F | 0x08A0..=0x08FF | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF)
}

struct Placed {
    arabic: bool,
    glyph: u16,
    x: f32,
    y: f32,
}

/// The fonts and their scales for a line `height` dots tall.
struct Faces<'a> {
    fonts: [FontRef<'a>; 2],
    faces: [rustybuzz::Face<'a>; 2],
    scales: [PxScale; 2],
}

fn faces(height: u32) -> Faces<'static> {
    Faces {
        fonts: [
            FontRef::try_from_slice(MONO).expect("bundled font"),
            FontRef::try_from_slice(ARABIC).expect("bundled font"),
        ],
        faces: [
            rustybuzz::Face::from_slice(MONO, 0).expect("bundled font"),
            rustybuzz::Face::from_slice(ARABIC, 0).expect("bundled font"),
        ],
        // Noto Sans Arabic's line height (ascent - descent) is tall for its letters: scaled up
        // so Arabic reads as large as the Latin beside it.
        scales: [
            PxScale::from(height as f32 * 0.9),
            PxScale::from(height as f32 * 1.35),
        ],
    }
}

/// Shapes `text` into glyphs placed left to right in visual order; returns them and the
/// width they take, in dots.
fn layout(f: &Faces<'_>, text: &str, height: u32) -> (Vec<Placed>, f32) {
    let baseline = height as f32 * 0.74;
    let info = BidiInfo::new(text, None);
    let mut placed = Vec::new();
    let mut pen = 0.0f32;
    for para in &info.paragraphs {
        let (levels, runs) = info.visual_runs(para, para.range.clone());
        for run in runs {
            let rtl = levels[run.start].is_rtl();
            // Each stretch in the font that has its letters (the Arabic font has no '#' or
            // '+'); a right-to-left run's stretches are laid out last first.
            let mut segments = font_segments(&text[run.clone()]);
            if rtl {
                segments.reverse();
            }
            for (s, arabic) in segments {
                let i = usize::from(arabic);
                let mut buf = rustybuzz::UnicodeBuffer::new();
                buf.push_str(s);
                buf.set_direction(if rtl {
                    rustybuzz::Direction::RightToLeft
                } else {
                    rustybuzz::Direction::LeftToRight
                });
                let shaped = rustybuzz::shape(&f.faces[i], &[], buf);
                let k = f.fonts[i].as_scaled(f.scales[i]).h_scale_factor();
                for (gi, gp) in shaped.glyph_infos().iter().zip(shaped.glyph_positions()) {
                    placed.push(Placed {
                        arabic,
                        glyph: u16::try_from(gi.glyph_id).unwrap_or(0),
                        x: pen + gp.x_offset as f32 * k,
                        y: baseline - gp.y_offset as f32 * k,
                    });
                    pen += gp.x_advance as f32 * k;
                }
            }
        }
    }
    (placed, pen)
}

/// `s` cut into stretches (in logical order) each drawn with one font: Arabic letters with
/// the Arabic font, everything else with the Latin one; spaces go with the stretch before.
pub(crate) fn font_segments(s: &str) -> Vec<(&str, bool)> {
    let mut out: Vec<(&str, bool)> = Vec::new();
    let mut start = 0;
    let mut current: Option<bool> = None;
    for (i, c) in s.char_indices() {
        let arabic = if c.is_whitespace() {
            current.unwrap_or(true)
        } else {
            is_arabic(c)
        };
        match current {
            Some(a) if a != arabic => {
                out.push((&s[start..i], a));
                start = i;
            }
            _ => {}
        }
        current = Some(arabic);
    }
    if let Some(a) = current {
        out.push((&s[start..], a));
    }
    out
}

/// How wide `text` draws at `height` dots tall, in dots.
pub fn text_width(text: &str, height: u32) -> f32 {
    layout(&faces(height), text, height).1
}

/// `text` broken at spaces into lines that each fit `width` dots at `height` (a word wider
/// than the paper on its own is broken between characters): nothing runs off the paper.
pub fn wrap(text: &str, height: u32, width: u32) -> Vec<String> {
    let f = faces(height);
    wrap_with(text, |s| layout(&f, s, height).1 <= width as f32)
}

/// `text` broken at spaces into lines that each pass `fits` (a word that does not on its own
/// is broken between characters).
pub(crate) fn wrap_with(text: &str, fits: impl Fn(&str) -> bool) -> Vec<String> {
    if fits(text) {
        return vec![text.to_string()];
    }
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let joined = if current.is_empty() {
            word.to_string()
        } else {
            format!("{current} {word}")
        };
        if fits(&joined) {
            current = joined;
            continue;
        }
        if !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        if fits(word) {
            current = word.to_string();
            continue;
        }
        for c in word.chars() {
            let next = format!("{current}{c}");
            if !current.is_empty() && !fits(&next) {
                lines.push(std::mem::take(&mut current));
                current.push(c);
            } else {
                current = next;
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// Draws `text` `height` dots tall into a `width`-dot line, aligned as asked (a line too long
/// for the paper is cut at the far end: [`wrap`] it first).
pub fn raster_line(text: &str, height: u32, width: u32, align: Align, bold: bool) -> Bitmap {
    let mut out = Bitmap::new(width, height);
    let f = faces(height);
    let (placed, pen) = layout(&f, text, height);
    let (fonts, scales) = (&f.fonts, &f.scales);
    let room = width as f32 - pen;
    let shift = match align {
        Align::Left => 0.0,
        Align::Center => (room / 2.0).max(0.0),
        Align::Right => room.max(0.0),
    };
    for p in placed {
        let font = &fonts[usize::from(p.arabic)];
        let scale = scales[usize::from(p.arabic)];
        let g = GlyphId(p.glyph).with_scale_and_position(scale, point(p.x + shift, p.y));
        if let Some(outline) = font.outline_glyph(g) {
            let b = outline.px_bounds();
            outline.draw(|x, y, c| {
                if c >= 0.5 {
                    let (px, py) = (b.min.x as i64 + x as i64, b.min.y as i64 + y as i64);
                    if px >= 0 && py >= 0 {
                        out.set(px as u32, py as u32);
                        if bold {
                            out.set(px as u32 + 1, py as u32);
                        }
                    }
                }
            });
        }
    }
    out
}
