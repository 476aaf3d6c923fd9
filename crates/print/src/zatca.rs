//! The QR code a simplified tax invoice carries in Saudi Arabia (ZATCA, e-invoicing phase 1):
//! five TLV fields (tag, length, UTF-8 value), base64-encoded.

use base64::Engine;

/// What a ZATCA phase-1 QR code says about an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZatcaInvoice {
    /// Tag 1: the seller's name.
    pub seller: String,
    /// Tag 2: the seller's VAT registration number.
    pub vat_number: String,
    /// Tag 3: when the invoice was issued (ISO 8601, UTC: `2026-12-06T23:44:00Z`).
    pub timestamp: String,
    /// Tag 4: the invoice total with VAT, as a decimal (`126.50`).
    pub total: String,
    /// Tag 5: the VAT total, as a decimal (`16.50`).
    pub vat: String,
}

/// The QR code's text: the invoice's fields as TLV, base64. A value longer than a TLV length
/// byte holds (255 bytes) is cut at a character boundary.
pub fn zatca_qr(inv: &ZatcaInvoice) -> String {
    let mut tlv = Vec::new();
    for (tag, value) in [
        (1u8, &inv.seller),
        (2, &inv.vat_number),
        (3, &inv.timestamp),
        (4, &inv.total),
        (5, &inv.vat),
    ] {
        let mut end = value.len().min(255);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        tlv.push(tag);
        tlv.push(end as u8);
        tlv.extend_from_slice(&value.as_bytes()[..end]);
    }
    base64::engine::general_purpose::STANDARD.encode(tlv)
}

/// Reads a ZATCA QR code's text back into its fields (tag, value), as a phone's app does.
pub fn parse_tlv(qr: &str) -> Result<Vec<(u8, String)>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(qr.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let (tag, len) = (
            bytes[i],
            *bytes.get(i + 1).ok_or("a tag without a length")? as usize,
        );
        let value = bytes
            .get(i + 2..i + 2 + len)
            .ok_or_else(|| format!("tag {tag} is cut short"))?;
        out.push((
            tag,
            String::from_utf8(value.to_vec()).map_err(|_| format!("tag {tag} is not UTF-8"))?,
        ));
        i += 2 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_survive_the_round_trip_in_arabic_too() {
        let inv = ZatcaInvoice {
            seller: "مطعم كبسولة".into(),
            vat_number: "300000000000003".into(),
            timestamp: "2026-12-06T23:44:00Z".into(),
            total: "126.50".into(),
            vat: "16.50".into(),
        };
        let fields = parse_tlv(&zatca_qr(&inv)).unwrap();
        assert_eq!(
            fields,
            vec![
                (1, "مطعم كبسولة".to_string()),
                (2, "300000000000003".to_string()),
                (3, "2026-12-06T23:44:00Z".to_string()),
                (4, "126.50".to_string()),
                (5, "16.50".to_string()),
            ]
        );
        // The seller's name's UTF-8 length, not its characters, is the TLV length.
        let raw = base64::engine::general_purpose::STANDARD
            .decode(zatca_qr(&inv))
            .unwrap();
        assert_eq!((raw[0], raw[1] as usize), (1, "مطعم كبسولة".len()));
    }
}
