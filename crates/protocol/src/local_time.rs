//! The shop's local time: times are stored in UTC and shown, printed and exported in the shop's
//! IANA time zone (`shop_settings.time_zone`), always with the date.

use jiff::Timestamp;
pub use jiff::tz::TimeZone;

/// The zone a shop that set none (or an unknown one) shows its times in.
pub const DEFAULT_ZONE: &str = "UTC";

/// The time zone named `name` (an IANA name such as `Asia/Riyadh`).
pub fn zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name.trim()).map_err(|_| {
        format!("unknown time zone '{name}' (an IANA name, e.g. Asia/Riyadh or Europe/London)")
    })
}

/// The zone `name`, or UTC when it is empty or unknown (a report still prints).
pub fn zone_or_utc(name: Option<&str>) -> TimeZone {
    name.filter(|n| !n.trim().is_empty())
        .and_then(|n| zone(n).ok())
        .unwrap_or(TimeZone::UTC)
}

/// A stored UTC time (RFC 3339) as staff read it in `tz`: `2026-12-07 02:44`. Text that is
/// not a time is returned as it is.
pub fn label(utc: &str, tz: &TimeZone) -> String {
    match utc.parse::<Timestamp>() {
        Ok(t) => t
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%d %H:%M")
            .to_string(),
        Err(_) => utc.to_string(),
    }
}

/// Now, as [`label`] shows it.
pub fn now_label(tz: &TimeZone) -> String {
    Timestamp::now()
        .to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%d %H:%M")
        .to_string()
}

/// A stored UTC time as RFC 3339 with the zone's offset (`2026-12-07T02:44:00+03:00`): what a
/// CSV export carries, so a spreadsheet and a reader both see local time and lose nothing.
pub fn with_offset(utc: &str, tz: &TimeZone) -> String {
    match utc.parse::<Timestamp>() {
        Ok(t) => t
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        Err(_) => utc.to_string(),
    }
}

/// The business day a moment belongs to (`2026-12-07`): its date in `tz`, a day that starts
/// at `start_hour` local time (a Z at 02:30 with days starting at 04:00 closes the 6th's).
pub fn business_date(utc: &str, tz: &TimeZone, start_hour: i64) -> Option<String> {
    let t = utc.parse::<Timestamp>().ok()?;
    let shifted = t
        .to_zoned_datetime(tz.clone())
        .checked_sub(jiff::SignedDuration::from_hours(start_hour.clamp(0, 23)))
        .ok()?;
    Some(shifted.strftime("%Y-%m-%d").to_string())
}

/// A stored UTC time to the second, as ZATCA's QR code wants it (`2026-12-06T23:44:00Z`).
pub fn utc_seconds(utc: &str) -> String {
    match utc.parse::<Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => utc.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_riyadh_evening_in_utc_is_the_next_morning_local() {
        let riyadh = zone("Asia/Riyadh").unwrap();
        // 23:44 UTC on 6 December is 02:44 on 7 December in Riyadh (UTC+3).
        assert_eq!(
            label("2026-12-06T23:44:00.000Z", &riyadh),
            "2026-12-07 02:44"
        );
        assert_eq!(
            with_offset("2026-12-06T23:44:00.000Z", &riyadh),
            "2026-12-07T02:44:00+03:00"
        );
        // Daylight saving is the zone's business: London in July is UTC+1.
        let london = zone("Europe/London").unwrap();
        assert_eq!(label("2026-07-01T12:00:00Z", &london), "2026-07-01 13:00");
        assert!(zone("Mars/Olympus").is_err());
        // A Z at 02:44 on the 7th, days starting at 04:00: the 6th's business day.
        assert_eq!(
            business_date("2026-12-06T23:44:00Z", &riyadh, 4).as_deref(),
            Some("2026-12-06")
        );
        assert_eq!(
            business_date("2026-12-07T02:00:00Z", &riyadh, 4).as_deref(),
            Some("2026-12-07")
        );
        assert_eq!(
            label("2026-12-06T23:44:00Z", &zone_or_utc(Some("Mars/Olympus"))),
            "2026-12-06 23:44"
        );
    }
}
