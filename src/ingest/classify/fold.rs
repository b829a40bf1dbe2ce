//! Case-insensitivity moved from the patterns to the text: the text is
//! folded once ([`fold_text`]) and each pattern compiled in its folded form
//! ([`fold_pattern`]) where that provably matches the same.

use regex_syntax::hir::{Capture, Class, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Look};
use std::borrow::Cow;

/// What [`fold_text`] replaces: upper-case ASCII and Latin-1 letters and
/// the few other characters whose simple case-folding orbit holds a
/// lower-case ASCII or Latin-1 letter (KELVIN SIGN, ANGSTROM SIGN, LONG S,
/// CAPITAL SHARP S). Folded text never contains these.
const FOLDED_AWAY: &[(char, char)] = &[
    ('A', 'Z'),
    ('\u{C0}', '\u{D6}'),
    ('\u{D8}', '\u{DE}'),
    ('\u{17F}', '\u{17F}'),
    ('\u{1E9E}', '\u{1E9E}'),
    ('\u{212A}', '\u{212B}'),
];

/// One character of [`fold_text`]: always a member of `c`'s simple
/// case-folding orbit (so every case-insensitive pattern treats both alike).
fn fold_char(c: char) -> char {
    match c {
        'A'..='Z' => c.to_ascii_lowercase(),
        '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{DE}' => char::from_u32(c as u32 + 0x20).unwrap_or(c),
        '\u{17F}' => 's',
        '\u{1E9E}' => '\u{DF}',
        '\u{212A}' => 'k',
        '\u{212B}' => '\u{E5}',
        _ => c,
    }
}

/// The text the folded patterns run over: each character replaced by a
/// member of its case-folding orbit (see [`FOLDED_AWAY`]). Same number of
/// characters, same lines.
pub fn fold_text(s: &str) -> Cow<'_, str> {
    // Nothing to do without upper-case ASCII or a lead byte of a character
    // that may fold.
    let folds = |b: &u8| b.is_ascii_uppercase() || matches!(b, 0xC3 | 0xC5 | 0xE1 | 0xE2);
    if !s.as_bytes().iter().any(folds) {
        return Cow::Borrowed(s);
    }
    // This runs over every body, so: ASCII in one vectorised pass, then a
    // scan that skips ASCII 16 bytes at a time for the characters that fold
    // outside ASCII (Latin-1 capitals C3 80..=C3 9E but C3 97 (×), and the
    // four of FOLDED_AWAY beyond), rebuilding only around those.
    let lower = s.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut out: Option<String> = None;
    let (mut i, mut done) = (0, 0);
    while i < b.len() {
        if b.len() - i >= 16 && b[i..i + 16].is_ascii() {
            i += 16;
            continue;
        }
        let special = match b[i] {
            0xC3 => b
                .get(i + 1)
                .is_some_and(|&c| (0x80..=0x9E).contains(&c) && c != 0x97),
            0xC5 => b.get(i + 1) == Some(&0xBF),
            0xE1 => b.get(i + 1..i + 3) == Some(&[0xBA, 0x9E][..]),
            0xE2 => b.get(i + 1) == Some(&0x84) && matches!(b.get(i + 2), Some(0xAA | 0xAB)),
            _ => false,
        };
        if !special {
            i += 1;
            continue;
        }
        // `i` is at a lead byte, so a character boundary.
        let Some(c) = lower[i..].chars().next() else {
            break;
        };
        let o = out.get_or_insert_with(|| String::with_capacity(lower.len()));
        o.push_str(&lower[done..i]);
        o.push(fold_char(c));
        i += c.len_utf8();
        done = i;
    }
    Cow::Owned(match out {
        Some(mut o) => {
            o.push_str(&lower[done..]);
            o
        }
        None => lower,
    })
}

/// The folded form of a pattern: matches `fold_text(t)` exactly where the
/// pattern matches `t`. `None` when that cannot be shown.
pub fn fold_pattern(pattern: &str) -> Option<String> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .ok()?;
    fold_hir(&hir).map(|h| h.to_string())
}

/// Folds a pattern's HIR. Sound because folding replaces characters within
/// their case-folding orbit: a class closed under case folding contains
/// either all of an orbit or none of it, so it accepts `fold_char(c)` iff
/// it accepts `c`; Unicode word boundaries see the same word characters.
/// Literals with cased letters (a case-sensitive pattern or part), byte
/// classes and ASCII word boundaries are not closed that way: `None`.
/// Small classes lose the characters folded text never contains, which
/// turns `[kK\u{212A}]` back into the literal `k` the prefilters like.
pub(super) fn fold_hir(h: &Hir) -> Option<Hir> {
    Some(match h.kind() {
        HirKind::Empty => h.clone(),
        HirKind::Literal(lit) => {
            let s = std::str::from_utf8(&lit.0).ok()?;
            if !s.chars().all(caseless) {
                return None;
            }
            h.clone()
        }
        HirKind::Class(Class::Unicode(c)) => {
            let size: u32 = c
                .ranges()
                .iter()
                .map(|r| r.end() as u32 - r.start() as u32 + 1)
                .sum();
            // A class is closed under case folding iff its complement is;
            // fold the smaller one (folding [^.\n] whole takes milliseconds).
            let mut probe = c.clone();
            if size > 0x8_0000 {
                probe.negate();
            }
            let before = probe.clone();
            probe.case_fold_simple();
            if probe != before {
                return None;
            }
            if size > 256 {
                // Large classes ([^.\n], \w, …) stay as they are: removing
                // characters would only split their ranges.
                return Some(h.clone());
            }
            let mut small = c.clone();
            small.difference(&ClassUnicode::new(
                FOLDED_AWAY
                    .iter()
                    .map(|&(a, b)| ClassUnicodeRange::new(a, b)),
            ));
            Hir::class(Class::Unicode(small))
        }
        HirKind::Class(Class::Bytes(_)) => return None,
        HirKind::Look(look) => match look {
            Look::Start
            | Look::End
            | Look::StartLF
            | Look::EndLF
            | Look::StartCRLF
            | Look::EndCRLF
            | Look::WordUnicode
            | Look::WordUnicodeNegate
            | Look::WordStartUnicode
            | Look::WordEndUnicode
            | Look::WordStartHalfUnicode
            | Look::WordEndHalfUnicode => h.clone(),
            _ => return None,
        },
        HirKind::Repetition(r) => {
            let mut r = r.clone();
            r.sub = Box::new(fold_hir(&r.sub)?);
            Hir::repetition(r)
        }
        HirKind::Capture(c) => Hir::capture(Capture {
            index: c.index,
            name: c.name.clone(),
            sub: Box::new(fold_hir(&c.sub)?),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(fold_hir).collect::<Option<_>>()?),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.iter().map(fold_hir).collect::<Option<_>>()?)
        }
    })
}

/// The guard of a folded pattern: every bounded repetition whose bounds are
/// more than 3 (and at most 1000) apart loses its upper bound. It accepts a
/// superset of what the pattern accepts; `[^.\n]{0,60}` costs 60 copies of
/// a Unicode class in the automata, `[^.\n]*` one. (Larger bounds stay, so
/// that a pattern too large to compile is still an error of the rules.)
pub(super) fn relax(h: &Hir) -> Hir {
    match h.kind() {
        HirKind::Repetition(r) => {
            let mut r = r.clone();
            if r.max.is_some_and(|max| max - r.min > 3 && max <= 1000) {
                r.max = None;
            }
            r.sub = Box::new(relax(&r.sub));
            Hir::repetition(r)
        }
        HirKind::Capture(c) => Hir::capture(Capture {
            index: c.index,
            name: c.name.clone(),
            sub: Box::new(relax(&c.sub)),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(relax).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(relax).collect()),
        _ => h.clone(),
    }
}

/// True when no other character folds to or from `c`.
fn caseless(c: char) -> bool {
    let mut class = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
    class.case_fold_simple();
    class.ranges().len() == 1 && class.ranges()[0].start() == class.ranges()[0].end()
}
#[cfg(test)]
mod tests {
    use super::super::test_support::{mail, PIECES};
    use super::*;
    use crate::domain::Severity;
    use crate::ingest::classify::{Facts, RuleSet};
    use regex::Regex;

    #[test]
    fn folding_stays_within_case_orbits() {
        let away = |c: char| FOLDED_AWAY.iter().any(|&(a, b)| a <= c && c <= b);
        for c in (0u32..0x3_0000).filter_map(char::from_u32) {
            let f = fold_char(c);
            assert!(!away(f), "{c:?} folds to {f:?}, which is folded away");
            if f == c {
                assert!(!away(c), "{c:?} is folded away but not changed");
                continue;
            }
            let mut orbit = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
            orbit.case_fold_simple();
            assert!(
                orbit
                    .ranges()
                    .iter()
                    .any(|r| r.start() <= f && f <= r.end()),
                "{c:?} folds to {f:?}, outside its case-folding orbit"
            );
        }
        assert_eq!(
            fold_text("ÄRGER mit ẞ, \u{212A} und ſ"),
            "ärger mit ß, k und s"
        );
        // The byte-wise fast path agrees with folding char by char.
        let all: String = (0u32..0x600)
            .chain([0x1E9E, 0x212A, 0x212B, 0x2013, 0x20AC, 0x1F600])
            .filter_map(char::from_u32)
            .collect();
        for t in [all.as_str(), "Grüße × ÷ Ä\u{212B}", "\u{E2}\u{84}"] {
            assert_eq!(fold_text(t), t.chars().map(fold_char).collect::<String>());
        }
        assert!(matches!(fold_text("nur klein, 1.2.3"), Cow::Borrowed(_)));
    }

    #[test]
    fn patterns_that_cannot_be_folded_are_kept() {
        for p in [
            "(?i)(?-i:SAP) system",
            "SAP",
            "(?i)(?-u:\\b)kunde",
            "(?i)(?-u:[a-z])x",
        ] {
            assert_eq!(fold_pattern(p), None, "{p}");
        }
        // Case-insensitivity is gone from the folded form: plain literals.
        let k = fold_pattern("(?i)Kunde").unwrap();
        assert!(
            k.contains("kunde") && !k.contains('K') && !k.contains('['),
            "{k}"
        );
        // Case-sensitive, but nothing in it has a case: folds as it is.
        assert!(fold_pattern("4711-[0-9]+").is_some());
        // A case-sensitive rule file keeps its meaning.
        let t =
            "case_sensitive = true\n[[rule]]\nname = \"sap\"\nseverity = 2\nsubject = [\"SAP\"]\n";
        let rs = RuleSet::compile(&[("c.toml".into(), t.into())]).unwrap();
        assert_eq!(
            rs.classify(&mail("SAP hängt", ""), &Facts::default())
                .severity,
            Some(Severity::Production)
        );
        assert_eq!(
            rs.classify(&mail("sap hängt", ""), &Facts::default())
                .severity,
            None
        );
    }

    fn folded_regexes() -> &'static [(String, Regex, Option<Regex>)] {
        static CELL: std::sync::OnceLock<Vec<(String, Regex, Option<Regex>)>> =
            std::sync::OnceLock::new();
        CELL.get_or_init(|| {
            let rs = RuleSet::embedded().unwrap();
            let mut pats = rs.sources.content.clone();
            pats.extend(
                [
                    "(?i)\\bkunde\\b",
                    "(?i)[a-z]+ist",
                    "(?i)\\p{Lu}{3}",
                    "(?i)\\W\\w{2}\\W",
                    "(?i)[^a-zäöüß ]{2}",
                    "(?i)k.{0,3}plett",
                    "(?i)^stra(ß|ss)e$",
                    "(?im)^(frage|notfall)",
                    "(?i)(?-i:SAP)|kunde",
                    "(?i)å|ÿ",
                ]
                .map(String::from),
            );
            pats.into_iter()
                .map(|p| {
                    let orig = Regex::new(&p).unwrap();
                    let folded = fold_pattern(&p).map(|f| Regex::new(&f).unwrap());
                    (p, orig, folded)
                })
                .collect()
        })
    }

    proptest::proptest! {
        #[test]
        fn folded_patterns_match_like_the_originals(
            parts in proptest::collection::vec(proptest::sample::select(PIECES), 0..10)
        ) {
            let text = parts.concat();
            let folded_text = fold_text(&text);
            for (p, orig, folded) in folded_regexes() {
                if let Some(f) = folded {
                    proptest::prop_assert_eq!(
                        orig.is_match(&text),
                        f.is_match(&folded_text),
                        "pattern {} on {:?}", p, text
                    );
                }
            }
        }
    }
}
