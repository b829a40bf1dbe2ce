//! Calendars for SLA clocks: 24/7, or business hours in a time zone with
//! opening hours per weekday, public holidays and extra closure days.
//!
//! Pure. Opening and closing are civil times in the calendar's zone, turned
//! into instants day by day, so a daylight-saving change moves nothing: an
//! hour of business time on the morning after the change is the same hour
//! of the clock as the day before. A due time is never inside a closed
//! period; a target that runs out exactly at closing time is due at closing
//! time, not at the next opening.

use super::holidays::{holidays, State};
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeSet;

/// When a calendar counts time.
#[derive(Debug, Clone)]
pub enum Calendar {
    /// Every hour of every day.
    Always,
    /// Business hours.
    Business(BusinessHours),
}

/// Business hours: opening hours per weekday in a zone, minus holidays and
/// closure days.
#[derive(Debug, Clone)]
pub struct BusinessHours {
    /// The zone the hours are in (default Europe/Berlin).
    pub tz: TimeZone,
    /// Opening hours per weekday, Monday first; `None`: closed all day.
    pub hours: [Option<(Time, Time)>; 7],
    /// Whose public holidays close the desk (national ones always when set).
    pub holidays: Option<HolidayRule>,
    /// Further closed days (company holidays, 24/31 December …).
    pub closed: BTreeSet<Date>,
}

/// Which public holidays close a business-hours calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolidayRule {
    /// The state whose holidays count besides the national ones.
    pub state: Option<State>,
}

/// Days searched for the next opening before giving up (a calendar closed
/// for good).
const MAX_CLOSED_DAYS: usize = 3700;

impl BusinessHours {
    /// Monday to Friday, `open`–`close`, in `tz`, with German national and
    /// `state` holidays.
    pub fn weekdays(tz: TimeZone, open: Time, close: Time, state: Option<State>) -> BusinessHours {
        let day = Some((open, close));
        BusinessHours {
            tz,
            hours: [day, day, day, day, day, None, None],
            holidays: Some(HolidayRule { state }),
            closed: BTreeSet::new(),
        }
    }

    /// Whether `d` is closed all day (a weekday without hours, a holiday,
    /// a closure day).
    pub fn is_closed_day(&self, d: Date) -> bool {
        self.closed_given(d, &self.holidays_of(d.year()))
    }

    /// The public holidays of `year` that close this calendar.
    fn holidays_of(&self, year: i16) -> Vec<Date> {
        match self.holidays {
            Some(rule) => holidays(year, rule.state)
                .into_iter()
                .map(|(d, _)| d)
                .collect(),
            None => Vec::new(),
        }
    }

    /// [`BusinessHours::is_closed_day`] with the year's holidays at hand.
    fn closed_given(&self, d: Date, holidays: &[Date]) -> bool {
        self.closed.contains(&d) || self.hours_of(d).is_none() || holidays.contains(&d)
    }

    fn hours_of(&self, d: Date) -> Option<(Time, Time)> {
        let i = d.weekday().to_monday_zero_offset() as usize;
        self.hours[i].filter(|(o, c)| o < c)
    }

    /// The open interval of day `d` as instants, if it is open (`holidays`:
    /// those of `d`'s year).
    fn interval(&self, d: Date, holidays: &[Date]) -> Option<(Timestamp, Timestamp)> {
        if self.closed_given(d, holidays) {
            return None;
        }
        let (o, c) = self.hours_of(d)?;
        let open = d.to_datetime(o).to_zoned(self.tz.clone()).ok()?.timestamp();
        let close = d.to_datetime(c).to_zoned(self.tz.clone()).ok()?.timestamp();
        (open < close).then_some((open, close))
    }

    /// The open intervals from the day of `from` on, in order, clipped to
    /// start no earlier than `from`.
    fn intervals_from(&self, from: Timestamp) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        let first = from.to_zoned(self.tz.clone()).date();
        let mut day = Some(first);
        let mut seen = 0usize;
        // Holidays are computed once per year walked through.
        let mut year = (first.year(), self.holidays_of(first.year()));
        std::iter::from_fn(move || loop {
            let d = day?;
            seen += 1;
            if seen > MAX_CLOSED_DAYS {
                return None;
            }
            day = d.tomorrow().ok();
            if d.year() != year.0 {
                year = (d.year(), self.holidays_of(d.year()));
            }
            if let Some((o, c)) = self.interval(d, &year.1) {
                if c <= from {
                    continue;
                }
                seen = 0;
                return Some((o.max(from), c));
            }
        })
    }
}

impl Calendar {
    /// The instant `amount` of counted time after `start`: the due time of
    /// a target. `None` only for a business calendar that never opens.
    pub fn add(&self, start: Timestamp, amount: SignedDuration) -> Option<Timestamp> {
        let amount = amount.max(SignedDuration::ZERO);
        match self {
            Calendar::Always => start.checked_add(amount).ok(),
            Calendar::Business(b) => {
                let mut left = amount;
                let mut last = None;
                for (o, c) in b.intervals_from(start) {
                    let span = c.duration_since(o);
                    if left <= span {
                        return o.checked_add(left).ok();
                    }
                    left -= span;
                    last = Some(c);
                }
                // Zero time left with nothing open: due at once.
                if amount.is_zero() {
                    return last.or(Some(start));
                }
                None
            }
        }
    }

    /// The counted time between `a` and `b` (zero when `b` is not later):
    /// how much of a target has been used.
    pub fn between(&self, a: Timestamp, b: Timestamp) -> SignedDuration {
        if b <= a {
            return SignedDuration::ZERO;
        }
        match self {
            Calendar::Always => b.duration_since(a),
            Calendar::Business(h) => {
                let mut total = SignedDuration::ZERO;
                for (o, c) in h.intervals_from(a) {
                    if o >= b {
                        break;
                    }
                    total += c.min(b).duration_since(o);
                    if c >= b {
                        break;
                    }
                }
                total
            }
        }
    }

    /// Whether time counts at `t` (open, or always).
    pub fn is_open(&self, t: Timestamp) -> bool {
        match self {
            Calendar::Always => true,
            Calendar::Business(h) => {
                let d = t.to_zoned(h.tz.clone()).date();
                h.interval(d, &h.holidays_of(d.year()))
                    .is_some_and(|(o, c)| o <= t && t < c)
            }
        }
    }
}

impl Calendar {
    /// The first instant at or after `t` at which time counts: `t` itself
    /// when open (always, for 24/7), else the next opening. `None` only for
    /// a business calendar that never opens again. Reminders wait for it.
    pub fn next_open(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Calendar::Always => Some(t),
            Calendar::Business(b) => b.intervals_from(t).next().map(|(o, _)| o),
        }
    }

    /// The days from `a`'s to `b`'s date (in the calendar's zone) that
    /// would be open by their weekday but are closed: public holidays by
    /// name, extra closure days as "closure day". Empty for 24/7; at most
    /// about ten years are looked at. For explaining a due time.
    pub fn holidays_between(&self, a: Timestamp, b: Timestamp) -> Vec<(Date, &'static str)> {
        let Calendar::Business(h) = self else {
            return Vec::new();
        };
        let first = a.to_zoned(h.tz.clone()).date();
        let last = b.to_zoned(h.tz.clone()).date();
        let mut out = Vec::new();
        let mut day = Some(first);
        let mut year: Option<(i16, Vec<(Date, &'static str)>)> = None;
        for _ in 0..MAX_CLOSED_DAYS {
            let Some(d) = day.filter(|d| *d <= last) else {
                break;
            };
            day = d.tomorrow().ok();
            if h.hours_of(d).is_none() {
                continue;
            }
            if year.as_ref().is_none_or(|(y, _)| *y != d.year()) {
                let list = match h.holidays {
                    Some(rule) => holidays(d.year(), rule.state),
                    None => Vec::new(),
                };
                year = Some((d.year(), list));
            }
            let named = year
                .as_ref()
                .and_then(|(_, list)| list.iter().find(|(hd, _)| *hd == d))
                .map(|(_, n)| *n);
            if let Some(n) = named {
                out.push((d, n));
            } else if h.closed.contains(&d) {
                out.push((d, "closure day"));
            }
        }
        out
    }

    /// The zone of a business calendar; `None` for 24/7.
    pub fn timezone(&self) -> Option<&TimeZone> {
        match self {
            Calendar::Always => None,
            Calendar::Business(b) => Some(&b.tz),
        }
    }

    /// A short description for people: "24/7", or e.g. "Mon–Fri
    /// 09:00–18:00 Europe/Berlin, holidays DE-BY".
    pub fn describe(&self) -> String {
        let Calendar::Business(b) = self else {
            return "24/7".to_string();
        };
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let mut groups: Vec<String> = Vec::new();
        let mut i = 0;
        while i < 7 {
            let Some((o, c)) = b.hours[i].filter(|(o, c)| o < c) else {
                i += 1;
                continue;
            };
            let mut j = i;
            while j + 1 < 7 && b.hours[j + 1] == b.hours[i] {
                j += 1;
            }
            let days = if j == i {
                DAYS[i].to_string()
            } else {
                format!("{}–{}", DAYS[i], DAYS[j])
            };
            groups.push(format!(
                "{days} {}–{}",
                o.strftime("%H:%M"),
                c.strftime("%H:%M")
            ));
            i = j + 1;
        }
        let hours = if groups.is_empty() {
            "never open".to_string()
        } else {
            groups.join(", ")
        };
        let zone = b.tz.iana_name().unwrap_or("UTC");
        let hol = match b.holidays {
            None => "no public holidays".to_string(),
            Some(HolidayRule { state: None }) => "holidays DE".to_string(),
            Some(HolidayRule { state: Some(s) }) => format!("holidays DE-{s:?}"),
        };
        let closed = match b.closed.len() {
            0 => String::new(),
            1 => ", 1 closure day".to_string(),
            n => format!(", {n} closure days"),
        };
        format!("{hours} {zone}, {hol}{closed}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jiff::civil::time;

    fn berlin() -> Calendar {
        Calendar::Business(BusinessHours::weekdays(
            TimeZone::get("Europe/Berlin").unwrap(),
            time(9, 0, 0, 0),
            time(18, 0, 0, 0),
            Some(State::BY),
        ))
    }

    /// Local Berlin time, e.g. "2026-12-04 17:00" (also for the clock's
    /// tests).
    pub(crate) fn at(s: &str) -> Timestamp {
        let dt: jiff::civil::DateTime = s.parse().unwrap();
        dt.to_zoned(TimeZone::get("Europe/Berlin").unwrap())
            .unwrap()
            .timestamp()
    }

    pub(crate) fn hours(h: i64) -> SignedDuration {
        SignedDuration::from_hours(h)
    }

    #[test]
    fn within_a_day_and_across_a_night() {
        let c = berlin();
        assert_eq!(
            c.add(at("2026-12-01 10:00"), hours(4)),
            Some(at("2026-12-01 14:00"))
        );
        // 12 business hours from Tuesday 15:00: 3 h today, 9 h Wednesday.
        assert_eq!(
            c.add(at("2026-12-01 15:00"), hours(12)),
            Some(at("2026-12-02 18:00"))
        );
        // Received at night: the clock starts at opening.
        assert_eq!(
            c.add(at("2026-12-01 22:30"), hours(1)),
            Some(at("2026-12-02 10:00"))
        );
        assert_eq!(
            c.add(at("2026-12-02 06:00"), SignedDuration::from_mins(30)),
            Some(at("2026-12-02 09:30"))
        );
    }

    #[test]
    fn due_exactly_at_closing_time_is_closing_time() {
        let c = berlin();
        assert_eq!(
            c.add(at("2026-12-01 17:00"), hours(1)),
            Some(at("2026-12-01 18:00"))
        );
        assert_eq!(
            c.add(at("2026-12-01 09:00"), hours(9)),
            Some(at("2026-12-01 18:00"))
        );
        assert_eq!(
            c.add(
                at("2026-12-01 09:00"),
                hours(9) + SignedDuration::from_secs(1)
            ),
            Some(at("2026-12-02 09:00:01"))
        );
    }

    #[test]
    fn weekends_and_holidays_are_skipped() {
        let c = berlin();
        // Friday 16:00 + 4 h: 2 h Friday, 2 h Monday.
        assert_eq!(
            c.add(at("2026-12-04 16:00"), hours(4)),
            Some(at("2026-12-07 11:00"))
        );
        // Christmas: Thu 24 Dec is open, 25/26 are holidays, 27 Sunday.
        assert_eq!(
            c.add(at("2026-12-24 17:00"), hours(2)),
            Some(at("2026-12-28 10:00"))
        );
        // Bavaria: Allerheiligen 2027 is a Monday.
        assert_eq!(
            c.add(at("2027-10-29 17:00"), hours(2)),
            Some(at("2027-11-02 10:00"))
        );
        // 36 business hours (Basic, severity 4) from the Wednesday before Easter
        // 2026: 6 + 9 h Wed/Thu, Good Friday and Easter Monday closed, 9 + 9 + 3 h.
        assert_eq!(
            c.add(at("2026-04-01 12:00"), hours(36)),
            Some(at("2026-04-09 12:00"))
        );
    }

    #[test]
    fn daylight_saving_changes_shift_nothing() {
        let c = berlin();
        // Spring forward on Sunday 29 March 2026: Friday 17:00 + 2 h is
        // Monday 10:00 local, 63 real hours minus the lost one.
        let due = c.add(at("2026-03-27 17:00"), hours(2)).unwrap();
        assert_eq!(due, at("2026-03-30 10:00"));
        // Fall back on Sunday 25 October 2026.
        assert_eq!(
            c.add(at("2026-10-23 17:00"), hours(2)),
            Some(at("2026-10-26 10:00"))
        );
        // 24/7 counts real time: 24 h across the spring change is 01:00 later on the clock.
        let always = Calendar::Always;
        assert_eq!(
            always.add(at("2026-03-28 12:00"), hours(24)),
            Some(at("2026-03-29 13:00"))
        );
    }

    #[test]
    fn business_time_between_counts_only_open_hours() {
        let c = berlin();
        assert_eq!(
            c.between(at("2026-12-04 16:00"), at("2026-12-07 11:00")),
            hours(4)
        );
        assert_eq!(
            c.between(at("2026-12-05 10:00"), at("2026-12-06 10:00")),
            SignedDuration::ZERO
        );
        assert_eq!(
            c.between(at("2026-12-07 11:00"), at("2026-12-04 16:00")),
            SignedDuration::ZERO
        );
        assert!(c.is_open(at("2026-12-01 09:00")));
        assert!(!c.is_open(at("2026-12-01 18:00")));
        assert!(!c.is_open(at("2026-12-25 12:00")));
    }

    #[test]
    fn closure_days_and_a_calendar_that_never_opens() {
        let mut b = BusinessHours::weekdays(
            TimeZone::get("Europe/Berlin").unwrap(),
            time(9, 0, 0, 0),
            time(18, 0, 0, 0),
            None,
        );
        b.closed.insert("2026-12-31".parse().unwrap());
        let c = Calendar::Business(b);
        assert_eq!(
            c.add(at("2026-12-30 17:00"), hours(2)),
            Some(at("2027-01-04 10:00"))
        );
        let never = Calendar::Business(BusinessHours {
            tz: TimeZone::UTC,
            hours: [None; 7],
            holidays: None,
            closed: BTreeSet::new(),
        });
        assert_eq!(never.add(at("2026-12-01 10:00"), hours(1)), None);
    }

    #[test]
    fn next_opening_holidays_by_name_and_descriptions() {
        let c = berlin();
        let t = at("2026-12-01 10:00");
        assert_eq!(c.next_open(t), Some(t));
        assert_eq!(
            c.next_open(at("2026-12-01 18:00")),
            Some(at("2026-12-02 09:00"))
        );
        assert_eq!(
            c.next_open(at("2026-12-04 20:00")),
            Some(at("2026-12-07 09:00"))
        );
        assert_eq!(Calendar::Always.next_open(t), Some(t));
        let names: Vec<(String, &str)> = c
            .holidays_between(at("2026-04-01 12:00"), at("2026-04-09 12:00"))
            .into_iter()
            .map(|(d, n)| (d.to_string(), n))
            .collect();
        assert_eq!(
            names,
            [
                ("2026-04-03".to_string(), "Karfreitag"),
                ("2026-04-06".to_string(), "Ostermontag")
            ]
        );
        // Holidays on a weekend close nothing and are not listed.
        assert!(c
            .holidays_between(at("2026-12-26 00:00"), at("2026-12-27 23:00"))
            .is_empty());
        let Calendar::Business(mut b) = c else {
            unreachable!()
        };
        b.closed.insert("2026-12-31".parse().unwrap());
        let c = Calendar::Business(b);
        let hol = c.holidays_between(at("2026-12-30 12:00"), at("2027-01-02 12:00"));
        let hol: Vec<&str> = hol.iter().map(|(_, n)| *n).collect();
        assert_eq!(hol, ["closure day", "Neujahr"]);
        assert_eq!(
            c.describe(),
            "Mon–Fri 09:00–18:00 Europe/Berlin, holidays DE-BY, 1 closure day"
        );
        assert_eq!(Calendar::Always.describe(), "24/7");
        assert!(Calendar::Always.holidays_between(t, t).is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// A due time is never inside a closed period: it is open then, or
        /// exactly a closing time, and the business time up to it is the
        /// amount asked for.
        #[test]
        fn due_times_are_open_and_exact(start in 0i64..(3 * 365 * 86_400), mins in 1i64..(80 * 60)) {
            let c = berlin();
            let s = at("2026-01-01 00:00") + SignedDuration::from_secs(start);
            let amount = SignedDuration::from_mins(mins);
            let due = c.add(s, amount).unwrap();
            let just_before = due - SignedDuration::from_secs(1);
            proptest::prop_assert!(c.is_open(due) || c.is_open(just_before), "due {due} closed");
            proptest::prop_assert_eq!(c.between(s, due), amount);
        }

        /// More time is never due earlier, and adding in two steps is adding
        /// once.
        #[test]
        fn adding_is_monotonic_and_additive(start in 0i64..(2 * 365 * 86_400), a in 0i64..(40 * 60), b in 1i64..(40 * 60)) {
            let c = berlin();
            let s = at("2026-01-01 00:00") + SignedDuration::from_secs(start);
            let (a, b) = (SignedDuration::from_mins(a), SignedDuration::from_mins(b));
            let once = c.add(s, a + b).unwrap();
            proptest::prop_assert!(c.add(s, a).unwrap() <= once);
            let step = c.add(s, a).unwrap();
            proptest::prop_assert_eq!(c.add(step, b).unwrap(), once);
        }
    }
}
