//! UTC timestamps as ISO-8601 text and back, for logs and the replay tool.
//!
//! Only the proleptic Gregorian calendar in UTC is needed, so this is the classic
//! days-from-civil arithmetic rather than a date-time library.

use crate::TimeUs;

/// Days since 1970-01-01 for a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-11-21T10:33:00.123456Z` (microseconds shown only when non-zero).
pub fn format_iso(us: TimeUs) -> String {
    let secs = (us / 1_000_000) as i64;
    let micros = us % 1_000_000;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
    if micros == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{micros:06}Z")
    }
}

/// Parse `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|+HH:MM|-HH:MM]` (a space may replace
/// the `T`), or Unix seconds (`1795252596` or `1795252596.5`), into microseconds.
pub fn parse_time(text: &str) -> Result<TimeUs, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok((secs * 1e6).round() as TimeUs);
        }
        return Err(format!("{text:?} is not a valid time"));
    }
    let bad = || {
        format!(
            "{text:?} is not a time (use ISO-8601 such as 2026-11-21T10:33:00Z, or Unix seconds)"
        )
    };
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let (date, rest) = match t.find(['T', ' ']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, ""),
    };
    let parts: Vec<&str> = date.split('-').collect();
    if parts.len() != 3 {
        return Err(bad());
    }
    let (y, mo, d) = (
        parts[0].parse::<i64>().map_err(|_| bad())?,
        num(parts[1])?,
        num(parts[2])?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let (clock, offset_s) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0i64)
    } else if let Some(i) = rest.rfind(['+', '-']).filter(|_| rest.len() > 5) {
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let hm: Vec<&str> = off[1..].split(':').collect();
        let h = num(hm[0])? as i64;
        let m = hm.get(1).map(|m| num(m)).transpose()?.unwrap_or(0) as i64;
        (c, sign * (h * 3600 + m * 60))
    } else {
        (rest, 0)
    };
    let mut secs_of_day = 0i64;
    let mut micros = 0u64;
    if !clock.is_empty() {
        let hms: Vec<&str> = clock.split(':').collect();
        if hms.len() < 2 || hms.len() > 3 {
            return Err(bad());
        }
        let (h, mi) = (num(hms[0])? as i64, num(hms[1])? as i64);
        let (s, frac) = match hms.get(2) {
            Some(s) => match s.split_once('.') {
                Some((s, f)) => (num(s)? as i64, f),
                None => (num(s)? as i64, ""),
            },
            None => (0, ""),
        };
        if h > 23
            || mi > 59
            || s > 60
            || frac.len() > 9
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let mut f = frac.to_string();
        f.truncate(6);
        while f.len() < 6 {
            f.push('0');
        }
        micros = f.parse().map_err(|_| bad())?;
        secs_of_day = h * 3600 + mi * 60 + s;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + secs_of_day - offset_s;
    if secs < 0 {
        return Err(bad());
    }
    Ok(secs as u64 * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for us in [
            0,
            1_795_252_596_759_151,
            951_782_400_000_000,
            4_102_444_799_000_000,
        ] {
            assert_eq!(
                parse_time(&format_iso(us)).unwrap(),
                us,
                "{}",
                format_iso(us)
            );
        }
        assert_eq!(format_iso(1_795_252_596_000_000), "2026-11-21T09:16:36Z");
        assert_eq!(parse_time("1795252596.5").unwrap(), 1_795_252_596_500_000);
        assert_eq!(parse_time("2026-11-21").unwrap(), 1_795_219_200_000_000);
        assert_eq!(
            parse_time("2026-11-21T11:16:36+02:00").unwrap(),
            1_795_252_596_000_000
        );
        assert_eq!(
            parse_time("2026-11-21 09:16").unwrap(),
            1_795_252_560_000_000
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01").is_err());
        assert!(parse_time("-5").is_err());
    }
}
