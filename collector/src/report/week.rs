//! ISO weeks (`2026-W48`) and their boundaries in a time zone.

use crate::domain::midnight_ms;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::{ISOWeekDate, Weekday};
use jiff::tz::TimeZone;

/// An ISO 8601 week: Monday to Sunday, week 1 holds the year's first Thursday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Week {
    year: i16,
    week: i8,
}

/// Why a string is not an ISO week.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("week {0:?} is not an ISO week like 2026-W48 (or current, last)")]
pub struct BadWeek(pub String);

impl Week {
    pub fn new(year: i16, week: i8) -> Option<Week> {
        ISOWeekDate::new(year, week, Weekday::Monday)
            .ok()
            .map(|_| Week { year, week })
    }

    /// The week holding instant `ms` in `tz`.
    pub fn containing(ms: i64, tz: &TimeZone) -> Week {
        let d = Timestamp::from_millisecond(ms)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(tz.clone())
            .date()
            .iso_week_date();
        Week {
            year: d.year(),
            week: d.week(),
        }
    }

    pub fn previous(self) -> Week {
        let monday = self.monday().yesterday().unwrap_or(self.monday());
        let d = monday.iso_week_date();
        Week {
            year: d.year(),
            week: d.week(),
        }
    }

    fn monday(self) -> jiff::civil::Date {
        ISOWeekDate::new(self.year, self.week, Weekday::Monday)
            .map(|d| d.date())
            .unwrap_or_default()
    }

    /// Midnight starting each of the week's 7 days, and the following Monday's, in `tz`
    /// (days are 23 or 25 hours long across a daylight-saving change).
    pub fn day_starts(self, tz: &TimeZone) -> [i64; 8] {
        let mut out = [0i64; 8];
        let mut d = self.monday();
        for slot in &mut out {
            *slot = midnight_ms(d, tz);
            d = d.tomorrow().unwrap_or(d);
        }
        out
    }

    /// `[start, end)` of the week in milliseconds since the epoch.
    pub fn bounds(self, tz: &TimeZone) -> (i64, i64) {
        let d = self.day_starts(tz);
        (d[0], d[7])
    }
}

/// A week as asked for: `current` (the week running now), `last` (the one before; also
/// when nothing is asked), or an ISO week like `2026-W48`.
pub fn requested(s: Option<&str>, now_ms: i64, tz: &TimeZone) -> Result<Week, BadWeek> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        Some("current") => Ok(Week::containing(now_ms, tz)),
        None | Some("last" | "previous") => Ok(Week::containing(now_ms, tz).previous()),
        Some(other) => other.parse(),
    }
}

impl fmt::Display for Week {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

impl FromStr for Week {
    type Err = BadWeek;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadWeek(s.to_string());
        let (y, w) = s.trim().split_once(['W', 'w']).ok_or_else(bad)?;
        let y = y.strip_suffix('-').unwrap_or(y);
        let ok = y.len() == 4 && (1..=2).contains(&w.len());
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if !ok || !digits(y) || !digits(w) {
            return Err(bad());
        }
        Week::new(y.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?).ok_or_else(bad)
    }
}

impl serde::Serialize for Week {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// RFC 3339 text of `ms` in `tz` (`2026-11-23T00:00:00+07:00`).
pub fn rfc3339(ms: i64, tz: &TimeZone) -> String {
    Timestamp::from_millisecond(ms)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jakarta() -> TimeZone {
        TimeZone::get("Asia/Jakarta").unwrap()
    }

    #[test]
    fn weeks_parse_print_and_bound_in_the_time_zone() {
        let w: Week = "2026-W48".parse().unwrap();
        assert_eq!(w.to_string(), "2026-W48");
        assert_eq!("2026W48".parse::<Week>().unwrap(), w);
        let (start, end) = w.bounds(&jakarta());
        // Monday 23 November 2026 00:00 WIB is 22 November 17:00 UTC.
        assert_eq!(rfc3339(start, &TimeZone::UTC), "2026-11-22T17:00:00+00:00");
        assert_eq!(end - start, 7 * 86_400_000);
        assert_eq!(Week::containing(start, &jakarta()), w);
        assert_eq!(Week::containing(start - 1, &jakarta()), w.previous());
        assert_eq!(w.previous().to_string(), "2026-W47");
        assert_eq!(
            requested(Some("current"), start + 1, &jakarta()).unwrap(),
            w
        );
        assert_eq!(
            requested(Some("last"), start + 1, &jakarta()).unwrap(),
            w.previous()
        );
        assert_eq!(
            requested(None, start + 1, &jakarta()).unwrap(),
            w.previous()
        );
        assert_eq!(
            "2027-W01".parse::<Week>().unwrap().previous().to_string(),
            "2026-W53"
        );
        for bad in ["2026-W54", "2025-W53", "26-W01", "2026-48", "2026-W", "x"] {
            assert!(bad.parse::<Week>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_week_across_a_daylight_saving_change_has_a_short_day() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let d = "2026-W13".parse::<Week>().unwrap().day_starts(&tz);
        let hours: Vec<i64> = d.windows(2).map(|w| (w[1] - w[0]) / 3_600_000).collect();
        assert_eq!(hours, [24, 24, 24, 24, 24, 24, 23]);
    }
}
