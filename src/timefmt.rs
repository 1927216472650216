//! Times and durations as people write them: RFC 3339 in UTC, `1h30m`, and back.
//! A few lines of calendar arithmetic instead of a date crate.

use std::time::Duration;

/// `2026-11-25T12:47:26.620Z` for Unix seconds.
pub fn rfc3339(unix: f64) -> String {
    let ms = (unix * 1000.0).round() as i64;
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}.{millis:03}Z",
        date(secs.div_euclid(86_400)),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A time given as Unix seconds (fractions allowed) or RFC 3339
/// (`2026-11-25T12:00:00Z`, `2026-11-25 12:00:00.5+01:00`).
pub fn parse_time(s: &str) -> Result<f64, String> {
    if let Some(unix) = s.parse::<f64>().ok().filter(|u| u.is_finite() && *u >= 0.0) {
        return Ok(unix);
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!("{s:?} is not a time; expected Unix seconds (1764000000.5) or RFC 3339 (2026-11-25T12:00:00Z)")
    })
}

fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        frac = format!("0.{}", &after_dot[..digits]).parse().ok()?;
        rest = &after_dot[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let t = rest.get(1..)?;
            let (oh, om) = t.split_once(':')?;
            if oh.len() != 2 || om.len() != 2 {
                return None;
            }
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    let unix = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(unix as f64 + frac)
}

/// A `Retry-After` value: seconds, or an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// as a wait from now. A date in the past means no wait.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let unix = parse_http_date(v)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(Duration::from_secs_f64((unix - now).max(0.0)))
}

/// The IMF-fixdate form of RFC 9110, the only one senders may use.
fn parse_http_date(v: &str) -> Option<f64> {
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms[..] else { return None };
    Some((days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s) as f64)
}

/// A duration such as `90s`, `15m`, `3d`, `1h30m` or `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration; expected e.g. 90s, 15m, 3d, 1h30m, 250ms");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let n = u32::try_from(n).map_err(|_| bad())?;
        total = total
            .checked_add(unit.checked_mul(n).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// `42s`, `3m 5s`, `2h 10m`, `4d 1h`: for uptimes and lateness.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(11_016), "2000-02-29");
        for days in [-1000, 0, 11_016, 20_782, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(rfc3339(1_795_609_435.837), "2026-11-25T12:23:55.837Z");
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1764000000.25"), Ok(1_764_000_000.25));
        assert_eq!(parse_time("2026-11-25T12:23:55Z"), Ok(1_795_609_435.0));
        assert_eq!(
            parse_time("2026-11-25T13:23:55.5+01:00"),
            Ok(1_795_609_435.5)
        );
        assert_eq!(parse_time("2026-11-25 12:23:55z"), Ok(1_795_609_435.0));
        for bad in [
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "2026-11-25T12:23:55",
            "-5",
            "",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777.0)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = rfc3339(0.0); // any date form other than IMF-fixdate is refused
        assert_eq!(parse_retry_after(&later), None);
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn durations_parse() {
        let secs = |s| parse_duration(s).map(|d| d.as_secs_f64());
        assert_eq!(secs("90s"), Ok(90.0));
        assert_eq!(secs("15m"), Ok(900.0));
        assert_eq!(secs("3d"), Ok(259_200.0));
        assert_eq!(secs("1h30m"), Ok(5400.0));
        assert_eq!(secs("250ms"), Ok(0.25));
        for bad in ["", "5", "5x", "h", "1.5h", "99999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
