//! Schedules of periodic jobs ("a digest at 08:00 on workdays") as cron
//! expressions in a time zone.
//!
//! Pure: an instant in, the next instant out. The cron crate (0.17) does the
//! matching on chrono date-times; this module converts jiff <-> chrono at
//! its edge (unix seconds and nanoseconds) and chrono-tz supplies the IANA
//! zone, so every field means civil time in that zone.
//!
//! # Accepted forms
//!
//! - The familiar 5-field crontab line `minute hour day-of-month month
//!   day-of-week`; it is run at second 0 (a `0` seconds field is put in
//!   front before the expression goes to the cron crate).
//! - The cron crate's own 6-field (`second minute hour day-of-month month
//!   day-of-week`) and 7-field (… `year`) forms.
//! - `@yearly`, `@monthly`, `@weekly` (Sunday 00:00), `@daily` and
//!   `@hourly`, which the cron crate supports. Other `@` words (`@reboot`,
//!   `@annually`, `@midnight`) are rejected.
//!
//! Month names (`Jan`, …) and everything else in the minute, hour, day and
//! month fields are as the cron crate reads them.
//!
//! # Day of week: Unix numbers in every form
//!
//! The cron crate numbers days 1 = Sunday … 7 = Saturday, so handed over
//! verbatim `0 8 * * 1-5` would run Sunday to Thursday. This module reads
//! numeric days the Unix way in **all** forms (5, 6 and 7 fields): 0 and 7
//! are Sunday, 1 Monday … 6 Saturday, so `1-5` is Monday to Friday, and
//! `5-7` is Friday to Sunday. Names (`Mon`, `tue`, `Friday`, ranges
//! `Mon-Fri`, lists `Mon,Wed`) work too, and may be mixed with numbers; as a
//! range end `Sun` means the end of the week (`Fri-Sun`). Ranges must run
//! forward (`Fri-Mon` is an error), a step needs `*` or a range (`1-5/2`,
//! `*/2`). The field is translated into a list of day names before the
//! cron crate sees it, so the crate's own numbering never applies.
//!
//! When both day-of-month and day-of-week are restricted, a day must match
//! **both** (the cron crate's rule): `0 8 1-7 * Mon` is the first Monday of
//! the month. Unix cron would instead run on either.
//!
//! # Daylight-saving time
//!
//! Fields are wall-clock times in the zone:
//! - A job at 08:00 stays at 08:00 local across a change (07:00 UTC in
//!   winter, 06:00 UTC in summer for Europe/Berlin).
//! - A wall-clock time that does not exist (02:00–02:59 on the night the
//!   clocks go forward) is **skipped**, not shifted: a daily job at 02:30
//!   does not run that night; the next run is 02:30 the day after. Interval
//!   jobs simply have no runs in the missing hour.
//! - A wall-clock time that occurs twice (02:00–02:59 on the night the
//!   clocks go back) runs **once**, at its first occurrence (summer time):
//!   a daily job at 02:30 does not run twice, and interval jobs (`@hourly`,
//!   `*/15 * * * *`) have no runs in the repeated hour.

use chrono::{DateTime, NaiveDateTime, TimeDelta, TimeZone as _};
use chrono_tz::Tz;
use std::fmt;
use std::str::FromStr;

/// Why a cron expression or its zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Neither 5, 6 nor 7 fields.
    #[error(
        "cron expression {expr:?} has {fields} field(s); expected 5 (minute hour \
         day-of-month month day-of-week), 6 (seconds first) or 7 (seconds first, year last)"
    )]
    FieldCount {
        /// The expression as written.
        expr: String,
        /// How many whitespace-separated fields it has.
        fields: usize,
    },
    /// An `@` word the cron crate does not know.
    #[error(
        "cron expression {expr:?}: {word:?} is not supported; use @yearly, @monthly, \
         @weekly, @daily or @hourly"
    )]
    Shorthand {
        /// The expression as written.
        expr: String,
        /// The `@` word.
        word: String,
    },
    /// A bad day-of-week field.
    #[error(
        "cron expression {expr:?}: day-of-week {field:?}: {reason} (days are 0-7 with \
         0 and 7 = Sunday, 1 = Monday, or names such as Mon-Fri)"
    )]
    DayOfWeek {
        /// The expression as written.
        expr: String,
        /// The day-of-week field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cron crate refused the (converted) expression: a value out of
    /// range, a bad range or step, an unknown name …
    #[error("cron expression {expr:?} is invalid: {reason}")]
    Invalid {
        /// The expression as written.
        expr: String,
        /// The cron crate's reason.
        reason: String,
    },
    /// Not an IANA time-zone name.
    #[error("unknown time zone {zone:?} (expected an IANA name such as Europe/Berlin)")]
    UnknownZone {
        /// The name given.
        zone: String,
    },
}

/// A cron schedule in a time zone: when a periodic job runs.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expr: String,
    zone: Tz,
    schedule: ::cron::Schedule,
}

/// The `@` words the cron crate understands.
const SHORTHANDS: [&str; 5] = ["@yearly", "@monthly", "@weekly", "@daily", "@hourly"];

/// Names in the order of Unix numbers (0 = Sunday).
const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

impl CronSchedule {
    /// Parses `expr` (5, 6 or 7 fields, or an `@` word; see the module
    /// doc) for the IANA zone `timezone`.
    pub fn parse(expr: &str, timezone: &str) -> Result<CronSchedule, CronError> {
        let zone = Tz::from_str(timezone.trim()).map_err(|_| CronError::UnknownZone {
            zone: timezone.to_string(),
        })?;
        let converted = convert(expr)?;
        let schedule = ::cron::Schedule::from_str(&converted).map_err(|e| CronError::Invalid {
            expr: expr.to_string(),
            // The crate's parse errors only echo the input: name the field
            // when a value is out of range.
            reason: diagnose(&converted)
                .unwrap_or_else(|| format!("the cron crate cannot parse {converted:?} ({e})")),
        })?;
        Ok(CronSchedule {
            expr: expr.to_string(),
            zone,
            schedule,
        })
    }

    /// The first run strictly after `t`, or `None` when there is none (a
    /// year field that has run out).
    pub fn next_after(&self, t: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let start =
            DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().try_into().ok()?)?
                .with_timezone(&self.zone);
        // The crate searches forward in wall-clock time and, for a time that
        // occurs twice, yields its earlier instant first. That instant can
        // lie before `t` when `t` is in the second pass of a repeated hour:
        // the run has happened, so go on from the end of that hour.
        let mut from = start;
        let mut found = None;
        for _ in 0..3 {
            let candidate = self.schedule.after(&from).next()?;
            if candidate > start {
                found = Some(candidate);
                break;
            }
            from = self
                .end_of_fold(candidate.naive_local())
                .unwrap_or(candidate);
        }
        let found = found?;
        jiff::Timestamp::new(
            found.timestamp(),
            found.timestamp_subsec_nanos().try_into().ok()?,
        )
        .ok()
    }

    /// The schedule's expression as written.
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The schedule's IANA zone name.
    pub fn timezone(&self) -> &str {
        self.zone.name()
    }

    /// The last second of the repeated wall-clock span that contains
    /// `local` (which must be ambiguous), as its later occurrence.
    fn end_of_fold(&self, local: NaiveDateTime) -> Option<DateTime<Tz>> {
        let (earlier, later) = match self.zone.from_local_datetime(&local) {
            chrono::LocalResult::Ambiguous(e, l) => (e, l),
            _ => return None,
        };
        let width = (later.timestamp() - earlier.timestamp()).max(1);
        // Ambiguous at `low`, not at `high`: bisect to the first second
        // that is not.
        let (mut low, mut high) = (0i64, width);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            let probe = local.checked_add_signed(TimeDelta::try_seconds(mid)?)?;
            match self.zone.from_local_datetime(&probe) {
                chrono::LocalResult::Ambiguous(..) => low = mid,
                _ => high = mid,
            }
        }
        let last = local.checked_add_signed(TimeDelta::try_seconds(low)?)?;
        self.zone.from_local_datetime(&last).latest()
    }
}

impl fmt::Display for CronSchedule {
    /// The expression as written and the zone: `0 8 * * 1-5 (Europe/Berlin)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expr, self.zone.name())
    }
}

/// The expression in the cron crate's form: seconds first, day-of-week as
/// names.
fn convert(expr: &str) -> Result<String, CronError> {
    let trimmed = expr.trim();
    if trimmed.starts_with('@') {
        let word = trimmed.to_ascii_lowercase();
        return if SHORTHANDS.contains(&word.as_str()) {
            Ok(word)
        } else {
            Err(CronError::Shorthand {
                expr: expr.to_string(),
                word: trimmed.to_string(),
            })
        };
    }
    let mut fields: Vec<String> = trimmed.split_whitespace().map(str::to_string).collect();
    match fields.len() {
        5 => fields.insert(0, "0".to_string()),
        6 | 7 => {}
        n => {
            return Err(CronError::FieldCount {
                expr: expr.to_string(),
                fields: n,
            })
        }
    }
    let dow = &mut fields[5];
    *dow = day_of_week(dow).map_err(|reason| CronError::DayOfWeek {
        expr: expr.to_string(),
        field: dow.clone(),
        reason,
    })?;
    Ok(fields.join(" "))
}

/// The fields of the crate's form, their names and the values they allow
/// (day-of-week is checked before, by [`day_of_week`]).
const FIELDS: [(&str, u32, u32); 7] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
    ("year", 1970, 2100),
];

/// Which field of a converted expression holds a number out of range.
fn diagnose(converted: &str) -> Option<String> {
    for (field, (name, min, max)) in converted.split_whitespace().zip(FIELDS) {
        for item in field.split(',') {
            let base = item.split_once('/').map_or(item, |(base, _)| base);
            for part in base.split('-') {
                if let Ok(n) = part.parse::<u64>() {
                    if n < u64::from(min) || n > u64::from(max) {
                        return Some(format!("{name} {n} is out of range {min}-{max}"));
                    }
                }
            }
        }
    }
    None
}

/// A day-of-week field with Unix numbers (or names) as a list of names;
/// `*` for every day.
fn day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let step: usize = step
                    .parse()
                    .ok()
                    .filter(|s| (1..=7).contains(s))
                    .ok_or_else(|| format!("step {step:?} is not a number from 1 to 7"))?;
                (base, Some(step))
            }
            None => (item, None),
        };
        let (start, end) = if base == "*" {
            (0, 7)
        } else if let Some((a, b)) = base.split_once('-') {
            let (a, b) = (day(a, false)?, day(b, true)?);
            if a > b {
                return Err(format!("range {base:?} runs backwards"));
            }
            (a, b)
        } else if step.is_some() {
            return Err(format!("a step needs * or a range before it, not {base:?}"));
        } else {
            let d = day(base, false)?;
            (d, d)
        };
        for d in (start..=end).step_by(step.unwrap_or(1)) {
            days[d % 7] = true;
        }
    }
    if days.iter().all(|&d| d) {
        return Ok("*".to_string());
    }
    let names: Vec<&str> = DAY_NAMES
        .iter()
        .zip(days)
        .filter_map(|(name, on)| on.then_some(*name))
        .collect();
    Ok(names.join(","))
}

/// One day: 0-7 (0 and 7 = Sunday) or a name; `Sun` as a range end is 7.
fn day(s: &str, range_end: bool) -> Result<usize, String> {
    if s.is_empty() {
        return Err("a day is missing".to_string());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<usize>()
            .ok()
            .filter(|&d| d <= 7)
            .ok_or_else(|| format!("day {s} is out of range"));
    }
    let number = match s.to_ascii_lowercase().as_str() {
        "sun" | "sunday" => {
            if range_end {
                7
            } else {
                0
            }
        }
        "mon" | "monday" => 1,
        "tue" | "tues" | "tuesday" => 2,
        "wed" | "wednesday" => 3,
        "thu" | "thurs" | "thursday" => 4,
        "fri" | "friday" => 5,
        "sat" | "saturday" => 6,
        _ => return Err(format!("{s:?} is not a day")),
    };
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    const BERLIN: &str = "Europe/Berlin";

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn next(expr: &str, after: &str) -> Timestamp {
        CronSchedule::parse(expr, BERLIN)
            .expect("valid expression")
            .next_after(ts(after))
            .expect("a next run")
    }

    /// The next `n` runs after `after`.
    fn runs(expr: &str, after: &str, n: usize) -> Vec<Timestamp> {
        let s = CronSchedule::parse(expr, BERLIN).expect("valid expression");
        let mut t = ts(after);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).expect("a next run");
            out.push(t);
        }
        out
    }

    #[test]
    fn workdays_at_eight_from_friday_winter() {
        // Friday 16 January 2026, 09:00 CET -> Monday 19 January 08:00 CET.
        assert_eq!(
            next("0 8 * * Mon-Fri", "2026-01-16T09:00:00+01:00"),
            ts("2026-01-19T07:00:00Z")
        );
    }

    #[test]
    fn workdays_at_eight_from_friday_summer() {
        // Friday 12 June 2026, 09:00 CEST -> Monday 15 June 08:00 CEST.
        assert_eq!(
            next("0 8 * * Mon-Fri", "2026-06-12T09:00:00+02:00"),
            ts("2026-06-15T06:00:00Z")
        );
    }

    #[test]
    fn strictly_after() {
        let at = "2026-01-19T07:00:00Z"; // Monday 08:00 CET
        assert_eq!(next("0 8 * * 1-5", at), ts("2026-01-20T07:00:00Z"));
        assert_eq!(
            next("0 8 * * 1-5", "2026-01-19T06:59:59.5Z"),
            ts("2026-01-19T07:00:00Z")
        );
    }

    #[test]
    fn unix_numbers_equal_names() {
        let start = "2026-01-01T00:00:00Z";
        assert_eq!(
            runs("0 8 * * 1-5", start, 30),
            runs("0 8 * * Mon-Fri", start, 30)
        );
        assert_eq!(
            runs("0 8 * * 1,3,5", start, 12),
            runs("0 8 * * mon,WED,Friday", start, 12)
        );
        assert_eq!(
            runs("0 8 * * 5-7", start, 12),
            runs("0 8 * * Fri-Sun", start, 12)
        );
        assert_eq!(
            runs("0 8 * * 1-5/2", start, 12),
            runs("0 8 * * Mon,Wed,Fri", start, 12)
        );
        assert_eq!(runs("0 8 * * 0-7", start, 12), runs("0 8 * * *", start, 12));
        // Thursday 1 January 2026: 1-5 must not include Sunday.
        let weekdays: Vec<_> = runs("0 8 * * 1-5", start, 10)
            .iter()
            .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).weekday())
            .collect();
        assert!(!weekdays.contains(&jiff::civil::Weekday::Sunday));
        assert!(!weekdays.contains(&jiff::civil::Weekday::Saturday));
    }

    #[test]
    fn zero_and_seven_are_sunday() {
        // Thursday 1 January 2026 -> Sunday 4 January 08:00 CET.
        let sunday = ts("2026-01-04T07:00:00Z");
        assert_eq!(next("0 8 * * 0", "2026-01-01T00:00:00Z"), sunday);
        assert_eq!(next("0 8 * * 7", "2026-01-01T00:00:00Z"), sunday);
        assert_eq!(next("0 8 * * Sun", "2026-01-01T00:00:00Z"), sunday);
        assert_eq!(next("0 0 8 * * 0", "2026-01-01T00:00:00Z"), sunday);
    }

    #[test]
    fn six_and_seven_fields() {
        // Seconds first; day-of-week numbers are Unix numbers here too.
        assert_eq!(
            next("30 15 8 * * 1-5", "2026-01-16T09:00:00+01:00"),
            ts("2026-01-19T07:15:30Z")
        );
        assert_eq!(
            runs("0 0 8 * * Mon-Fri", "2026-01-01T00:00:00Z", 20),
            runs("0 8 * * 1-5", "2026-01-01T00:00:00Z", 20)
        );
        assert_eq!(
            next("0 0 8 1 1 * 2027", "2026-01-01T00:00:00Z"),
            ts("2027-01-01T07:00:00Z")
        );
        let once = CronSchedule::parse("0 0 8 1 1 * 2027", BERLIN).expect("valid");
        assert_eq!(once.next_after(ts("2027-01-01T07:00:00Z")), None);
    }

    #[test]
    fn shorthands() {
        assert_eq!(
            next("@daily", "2026-01-16T09:00:00Z"),
            ts("2026-01-16T23:00:00Z")
        );
        assert_eq!(
            next("@hourly", "2026-01-16T09:10:00Z"),
            ts("2026-01-16T10:00:00Z")
        );
        // @weekly: Sunday midnight.
        assert_eq!(
            next("@weekly", "2026-01-16T09:00:00Z"),
            ts("2026-01-17T23:00:00Z")
        );
        let err = CronSchedule::parse("@reboot", BERLIN).unwrap_err();
        assert!(matches!(err, CronError::Shorthand { .. }), "{err}");
        assert!(err.to_string().contains("@reboot"), "{err}");
    }

    #[test]
    fn eight_oclock_after_spring_forward() {
        // Clocks go forward on Sunday 29 March 2026 at 02:00 CET.
        assert_eq!(
            runs("0 8 * * *", "2026-03-28T12:00:00Z", 2),
            vec![ts("2026-03-29T06:00:00Z"), ts("2026-03-30T06:00:00Z")]
        );
        assert_eq!(
            next("0 8 * * *", "2026-03-28T12:00:00Z"),
            ts("2026-03-29T08:00:00+02:00")
        );
    }

    #[test]
    fn eight_oclock_after_fall_back() {
        // Clocks go back on Sunday 25 October 2026 at 03:00 CEST.
        assert_eq!(
            runs("0 8 * * *", "2026-10-24T12:00:00Z", 2),
            vec![ts("2026-10-25T07:00:00Z"), ts("2026-10-26T07:00:00Z")]
        );
        assert_eq!(
            next("0 8 * * *", "2026-10-24T12:00:00Z"),
            ts("2026-10-25T08:00:00+01:00")
        );
    }

    #[test]
    fn missing_time_on_spring_forward_is_skipped() {
        // 02:30 does not exist on 29 March 2026: no run that night, the next
        // is 02:30 CEST on 30 March.
        assert_eq!(
            runs("30 2 * * *", "2026-03-28T12:00:00Z", 2),
            vec![
                ts("2026-03-30T02:30:00+02:00"),
                ts("2026-03-31T02:30:00+02:00")
            ]
        );
        // Interval jobs just have no runs in the missing hour.
        assert_eq!(
            runs("*/30 * * * *", "2026-03-29T01:00:00+01:00", 2),
            vec![
                ts("2026-03-29T01:30:00+01:00"),
                ts("2026-03-29T03:00:00+02:00")
            ]
        );
    }

    #[test]
    fn repeated_time_on_fall_back_runs_once() {
        // 02:30 occurs twice on 25 October 2026: the job runs at the first
        // (CEST) and not again at 02:30 CET.
        assert_eq!(
            runs("30 2 * * *", "2026-10-24T12:00:00Z", 2),
            vec![
                ts("2026-10-25T02:30:00+02:00"),
                ts("2026-10-26T02:30:00+01:00")
            ]
        );
        // Asked from inside the second pass (02:10 CET): the 02:30 run has
        // already happened an hour earlier.
        assert_eq!(
            next("30 2 * * *", "2026-10-25T02:10:00+01:00"),
            ts("2026-10-26T02:30:00+01:00")
        );
        // Interval jobs pause for the repeated hour.
        assert_eq!(
            runs("0 * * * *", "2026-10-25T01:30:00+02:00", 3),
            vec![
                ts("2026-10-25T02:00:00+02:00"),
                ts("2026-10-25T03:00:00+01:00"),
                ts("2026-10-25T04:00:00+01:00"),
            ]
        );
        assert_eq!(
            next("*/15 * * * *", "2026-10-25T02:20:00+01:00"),
            ts("2026-10-25T03:00:00+01:00")
        );
    }

    #[test]
    fn expression_and_display() {
        let s = CronSchedule::parse("0 8 * * 1-5", BERLIN).expect("valid");
        assert_eq!(s.expression(), "0 8 * * 1-5");
        assert_eq!(s.timezone(), BERLIN);
        assert_eq!(s.to_string(), "0 8 * * 1-5 (Europe/Berlin)");
    }

    #[test]
    fn errors() {
        let err = CronSchedule::parse("0 8 * *", BERLIN).unwrap_err();
        assert_eq!(
            err,
            CronError::FieldCount {
                expr: "0 8 * *".to_string(),
                fields: 4
            }
        );
        assert!(err.to_string().contains("\"0 8 * *\""), "{err}");

        let err = CronSchedule::parse("61 8 * * *", BERLIN).unwrap_err();
        assert!(matches!(err, CronError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("61 8 * * *"), "{err}");
        assert!(
            err.to_string().contains("minute 61 is out of range 0-59"),
            "{err}"
        );
        let err = CronSchedule::parse("0 0 24 * * *", BERLIN).unwrap_err();
        assert!(
            err.to_string().contains("hour 24 is out of range 0-23"),
            "{err}"
        );
        let err = CronSchedule::parse("0 8 * * x y", BERLIN).unwrap_err();
        assert!(matches!(err, CronError::DayOfWeek { .. }), "{err}");
        let err = CronSchedule::parse("0 8 * Foo *", BERLIN).unwrap_err();
        assert!(matches!(err, CronError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("cannot parse"), "{err}");

        let err = CronSchedule::parse("0 8 * * 8", BERLIN).unwrap_err();
        assert!(matches!(err, CronError::DayOfWeek { .. }), "{err}");
        assert!(err.to_string().contains("day 8 is out of range"), "{err}");

        for bad in [
            "0 8 * * Fri-Mon",
            "0 8 * * Mo",
            "0 8 * * 1/2",
            "0 8 * * 1-",
            "0 8 * * */0",
        ] {
            let err = CronSchedule::parse(bad, BERLIN).unwrap_err();
            assert!(matches!(err, CronError::DayOfWeek { .. }), "{bad}: {err}");
        }

        let err = CronSchedule::parse("0 8 * * *", "Europe/Bärlin").unwrap_err();
        assert_eq!(
            err,
            CronError::UnknownZone {
                zone: "Europe/Bärlin".to_string()
            }
        );
        assert!(CronSchedule::parse("0 8 * * *", "").is_err());
    }
}
