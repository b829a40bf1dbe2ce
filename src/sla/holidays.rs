//! German public holidays, computed per year: the national ones and those
//! of each Bundesland (regional holidays that hold only in some
//! municipalities — Fronleichnam in parts of Saxony and Thuringia, Mariä
//! Himmelfahrt in parts of Bavaria, the Augsburg Friedensfest — are left to
//! a calendar's extra closure days).

use jiff::civil::{date, Date};

/// A German state, by its official two-letter code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Baden-Württemberg.
    BW,
    /// Bayern.
    BY,
    /// Berlin.
    BE,
    /// Brandenburg.
    BB,
    /// Bremen.
    HB,
    /// Hamburg.
    HH,
    /// Hessen.
    HE,
    /// Mecklenburg-Vorpommern.
    MV,
    /// Niedersachsen.
    NI,
    /// Nordrhein-Westfalen.
    NW,
    /// Rheinland-Pfalz.
    RP,
    /// Saarland.
    SL,
    /// Sachsen.
    SN,
    /// Sachsen-Anhalt.
    ST,
    /// Schleswig-Holstein.
    SH,
    /// Thüringen.
    TH,
}

impl State {
    /// Reads a state code (`BY`, `by`) or name (`Bayern`).
    pub fn parse(s: &str) -> Option<State> {
        use State::*;
        Some(match s.trim().to_lowercase().as_str() {
            "bw" | "baden-württemberg" | "baden-wuerttemberg" => BW,
            "by" | "bayern" => BY,
            "be" | "berlin" => BE,
            "bb" | "brandenburg" => BB,
            "hb" | "bremen" => HB,
            "hh" | "hamburg" => HH,
            "he" | "hessen" => HE,
            "mv" | "mecklenburg-vorpommern" => MV,
            "ni" | "niedersachsen" => NI,
            "nw" | "nrw" | "nordrhein-westfalen" => NW,
            "rp" | "rheinland-pfalz" => RP,
            "sl" | "saarland" => SL,
            "sn" | "sachsen" => SN,
            "st" | "sachsen-anhalt" => ST,
            "sh" | "schleswig-holstein" => SH,
            "th" | "thüringen" | "thueringen" => TH,
            _ => return None,
        })
    }
}

/// Easter Sunday of `year` (Gregorian; the anonymous algorithm of 1876).
pub fn easter(year: i16) -> Date {
    let y = i32::from(year);
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    // month is 3 or 4 and day 1..=31 by construction.
    date(year, month as i8, day as i8)
}

/// The public holidays of `year`, nationwide and (with `state`) of that
/// state, as (date, German name), in date order.
pub fn holidays(year: i16, state: Option<State>) -> Vec<(Date, &'static str)> {
    use State::*;
    let e = easter(year);
    let rel = |days: i64| e.checked_add(jiff::Span::new().days(days)).unwrap_or(e);
    let mut v: Vec<(Date, &'static str)> = vec![
        (date(year, 1, 1), "Neujahr"),
        (rel(-2), "Karfreitag"),
        (rel(1), "Ostermontag"),
        (date(year, 5, 1), "Tag der Arbeit"),
        (rel(39), "Christi Himmelfahrt"),
        (rel(50), "Pfingstmontag"),
        (date(year, 10, 3), "Tag der Deutschen Einheit"),
        (date(year, 12, 25), "1. Weihnachtstag"),
        (date(year, 12, 26), "2. Weihnachtstag"),
    ];
    if year == 2017 {
        v.push((date(2017, 10, 31), "Reformationstag (500 Jahre)"));
    }
    if let Some(s) = state {
        let is = |list: &[State]| list.contains(&s);
        if is(&[BW, BY, ST]) {
            v.push((date(year, 1, 6), "Heilige Drei Könige"));
        }
        if (s == BE && year >= 2019) || (s == MV && year >= 2023) {
            v.push((date(year, 3, 8), "Internationaler Frauentag"));
        }
        if s == BB {
            v.push((e, "Ostersonntag"));
            v.push((rel(49), "Pfingstsonntag"));
        }
        if s == BE && (year == 2020 || year == 2025) {
            v.push((date(year, 5, 8), "Tag der Befreiung"));
        }
        if is(&[BW, BY, HE, NW, RP, SL]) {
            v.push((rel(60), "Fronleichnam"));
        }
        if s == SL {
            v.push((date(year, 8, 15), "Mariä Himmelfahrt"));
        }
        if s == TH && year >= 2019 {
            v.push((date(year, 9, 20), "Weltkindertag"));
        }
        let reformation_since_1990 = is(&[BB, MV, SN, ST, TH]);
        let reformation_since_2018 = is(&[HB, HH, NI, SH]) && year >= 2018;
        if year != 2017 && (reformation_since_1990 || reformation_since_2018) {
            v.push((date(year, 10, 31), "Reformationstag"));
        }
        if is(&[BW, BY, NW, RP, SL]) {
            v.push((date(year, 11, 1), "Allerheiligen"));
        }
        if s == SN {
            // The Wednesday before 23 November: between 16 and 22 November.
            let d23 = date(year, 11, 23);
            let back = (d23.weekday().to_monday_zero_offset() + 7 - 2) % 7;
            let back = if back == 0 { 7 } else { back };
            let bb = d23
                .checked_sub(jiff::Span::new().days(i64::from(back)))
                .unwrap_or(d23);
            v.push((bb, "Buß- und Bettag"));
        }
    }
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easter_dates_are_right() {
        for (y, m, d) in [
            (2019, 4, 21),
            (2024, 3, 31),
            (2025, 4, 20),
            (2026, 4, 5),
            (2027, 3, 28),
            (2038, 4, 25),
            (2285, 3, 22),
        ] {
            assert_eq!(easter(y), date(y, m, d), "{y}");
        }
    }

    #[test]
    fn national_and_state_holidays_of_2026() {
        let names = |s| {
            holidays(2026, s)
                .into_iter()
                .map(|(d, n)| (d.to_string(), n))
                .collect::<Vec<_>>()
        };
        let national = names(None);
        assert_eq!(national.len(), 9);
        assert!(national.contains(&("2026-04-03".into(), "Karfreitag")));
        assert!(national.contains(&("2026-05-14".into(), "Christi Himmelfahrt")));
        assert!(national.contains(&("2026-05-25".into(), "Pfingstmontag")));
        let by = names(Some(State::BY));
        assert!(by.contains(&("2026-01-06".into(), "Heilige Drei Könige")));
        assert!(by.contains(&("2026-06-04".into(), "Fronleichnam")));
        assert!(by.contains(&("2026-11-01".into(), "Allerheiligen")));
        assert!(!by.iter().any(|(_, n)| *n == "Reformationstag"));
        let sn = names(Some(State::SN));
        assert!(sn.contains(&("2026-11-18".into(), "Buß- und Bettag")));
        assert!(sn.contains(&("2026-10-31".into(), "Reformationstag")));
        let be = names(Some(State::BE));
        assert!(be.contains(&("2026-03-08".into(), "Internationaler Frauentag")));
        assert_eq!(
            names(Some(State::NI)).len(),
            10,
            "Reformationstag since 2018"
        );
        assert_eq!(
            holidays(2017, Some(State::BY))
                .iter()
                .filter(|(_, n)| n.starts_with("Reformationstag"))
                .count(),
            1
        );
    }

    #[test]
    fn buss_und_bettag_is_the_wednesday_before_23_november() {
        for y in 2000..2100 {
            let (d, _) = holidays(y, Some(State::SN))
                .into_iter()
                .find(|(_, n)| *n == "Buß- und Bettag")
                .unwrap();
            assert_eq!(d.weekday(), jiff::civil::Weekday::Wednesday, "{y}");
            assert!(d.month() == 11 && (16..=22).contains(&d.day()), "{y}: {d}");
        }
    }

    #[test]
    fn states_parse_by_code_and_name() {
        assert_eq!(State::parse("by"), Some(State::BY));
        assert_eq!(State::parse("Nordrhein-Westfalen"), Some(State::NW));
        assert_eq!(State::parse("XX"), None);
    }
}
