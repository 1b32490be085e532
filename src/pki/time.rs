//! Certificate and CRL times (RFC 5280 §4.1.2.5, §5.1.2.4–5) as whole Unix seconds.

use super::PathError;
use super::der::{Tlv, tag};
use std::time::{SystemTime, UNIX_EPOCH};

fn malformed(what: &str) -> PathError {
    PathError::Malformed { what: what.to_string() }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's civil algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn digits(s: &[u8], what: &str) -> Result<i64, PathError> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(malformed(what));
    }
    Ok(s.iter().fold(0i64, |acc, &b| acc * 10 + (b - b'0') as i64))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Unix seconds of a calendar date and time, validating every field.
pub fn unix_seconds(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, what: &str) -> Result<i64, PathError> {
    let dim = [31, if is_leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) {
        return Err(malformed(what));
    }
    let max_day = dim.get((mo - 1) as usize).copied().unwrap_or(0);
    // Seconds 0..=59: RFC 5280 times carry no leap seconds.
    if d < 1 || d > max_day || h > 23 || mi > 59 || s > 59 {
        return Err(malformed(what));
    }
    Ok(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s)
}

/// Parses a `Time` (UTCTime or GeneralizedTime) in the exact forms RFC 5280 allows:
/// `YYMMDDHHMMSSZ` (§4.1.2.5.1, YY ≥ 50 means 19YY) and `YYYYMMDDHHMMSSZ` without fractional
/// seconds (§4.1.2.5.2).
pub fn parse_time(tlv: &Tlv<'_>, what: &str) -> Result<i64, PathError> {
    let v = tlv.value;
    let bad = || malformed(&format!("{what}: invalid time encoding"));
    let (year, rest) = match tlv.tag {
        tag::UTC_TIME => {
            if v.len() != 13 {
                return Err(bad());
            }
            let yy = digits(&v[0..2], what)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &v[2..])
        }
        tag::GENERALIZED_TIME => {
            if v.len() != 15 {
                return Err(bad());
            }
            (digits(&v[0..4], what)?, &v[4..])
        }
        _ => return Err(bad()),
    };
    if rest.len() != 11 || rest[10] != b'Z' {
        return Err(bad());
    }
    let f = |i: usize| digits(&rest[i..i + 2], what);
    unix_seconds(year, f(0)?, f(2)?, f(4)?, f(6)?, f(8)?, what).map_err(|_| bad())
}

/// `at` as whole Unix seconds, floored: validity is encoded at one-second granularity
/// (§4.1.2.5), so a fraction past `notAfter`'s second is still that second.
pub fn floor_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 { -secs - 1 } else { -secs }
        }
    }
}

/// Formats Unix seconds as RFC 3339 UTC (`2024-01-01T00:00:00Z`) for messages.
pub fn format_unix(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let tod = secs.rem_euclid(86400);
    // Inverse of days_from_civil.
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", tod / 3600, (tod / 60) % 60, tod % 60)
}

/// Formats a time as RFC 3339 UTC with whole seconds (`2024-01-01T00:00:00Z`), fractions floored:
/// the form keyroll stores and prints.
pub fn format_rfc3339(t: SystemTime) -> String {
    format_unix(floor_seconds(t))
}

/// Parses an RFC 3339 timestamp (`2024-01-01T00:00:00Z`, `...T00:00:00.5+01:00`) into a
/// [`SystemTime`]. Fractional seconds are kept. Returns `None` on any syntax error.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits(b.get(r)?, "rfc3339").ok();
    let base = unix_seconds(n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?, "rfc3339").ok()?;
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + (b[i] - b'0') as u32;
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2], "tz").ok()?;
            let m = digits(&[*m1, *m2], "tz").ok()?;
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let secs = base - offset;
    let frac = std::time::Duration::from_nanos(nanos as u64);
    if secs >= 0 {
        UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs as u64))?.checked_add(frac)
    } else {
        UNIX_EPOCH.checked_sub(std::time::Duration::from_secs(secs.unsigned_abs()))?.checked_add(frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_round_trip() {
        let t = Tlv { tag: tag::UTC_TIME, value: b"240301000001Z", raw: &[] };
        let s = parse_time(&t, "t").unwrap();
        assert_eq!(format_unix(s), "2024-03-01T00:00:01Z");
        let g = Tlv { tag: tag::GENERALIZED_TIME, value: b"29690503000001Z", raw: &[] };
        assert_eq!(format_unix(parse_time(&g, "t").unwrap()), "2969-05-03T00:00:01Z");
        let frac = Tlv { tag: tag::GENERALIZED_TIME, value: b"20240301000001.5Z", raw: &[] };
        assert!(parse_time(&frac, "t").is_err());
        let bad = Tlv { tag: tag::UTC_TIME, value: b"240230000001Z", raw: &[] };
        assert!(parse_time(&bad, "t").is_err());
    }

    #[test]
    fn rfc3339_floors_fractions() {
        let t = parse_rfc3339("2024-03-01T00:00:00.999+00:00").unwrap();
        assert_eq!(format_unix(floor_seconds(t)), "2024-03-01T00:00:00Z");
        let t = parse_rfc3339("2024-03-01T01:00:00+01:00").unwrap();
        assert_eq!(format_unix(floor_seconds(t)), "2024-03-01T00:00:00Z");
        assert!(parse_rfc3339("2024-13-01T00:00:00Z").is_none());
        assert!(parse_rfc3339("yesterday").is_none());
    }
}
