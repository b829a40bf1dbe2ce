//! One field's patterns compiled into regex sets: the folded patterns run
//! over the folded text, the others over the text as it is; guards with
//! their exact patterns compiled on demand; the steady-state set for
//! processes that classify many mails.

use super::fold::{fold_hir, fold_text, relax};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use regex_syntax::hir::Hir;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A pattern collection for one field; compiled into one set. A pattern
/// that occurs more than once gets one index.
#[derive(Debug, Default, Clone)]
pub(super) struct PatternList {
    /// The patterns as written (with the file's flags).
    pub(super) patterns: Vec<String>,
    /// For each pattern its folded form (see [`fold_pattern`](super::fold_pattern)), if it has
    /// one: (guard, exact). The guard is the exact form with long bounded
    /// repetitions unbounded (`[^.\n]{0,60}` → `[^.\n]*`): it matches
    /// wherever the exact form does and compiles far faster; `exact` is
    /// `None` when the guard is exact already.
    folded: Vec<Option<(String, Option<String>)>>,
    index: HashMap<String, usize>,
}

impl PatternList {
    pub(super) fn push(&mut self, p: String, hir: &Hir) -> usize {
        if let Some(&i) = self.index.get(&p) {
            return i;
        }
        self.patterns.push(p.clone());
        self.folded.push(fold_hir(hir).map(|exact| {
            let guard = relax(&exact);
            if guard == exact {
                (exact.to_string(), None)
            } else {
                (guard.to_string(), Some(exact.to_string()))
            }
        }));
        self.index.insert(p, self.patterns.len() - 1);
        self.patterns.len() - 1
    }
}

/// A pattern compiled on first use.
#[derive(Debug, Clone)]
struct LazyRegex {
    pattern: String,
    regex: OnceLock<Option<Regex>>,
}

impl LazyRegex {
    /// Whether it matches; `None` if it cannot be compiled.
    fn is_match(&self, hay: &str) -> Option<bool> {
        self.regex
            .get_or_init(|| {
                RegexBuilder::new(&self.pattern)
                    .size_limit(64 << 20)
                    .dfa_size_limit(16 << 20)
                    .build()
                    .map_err(|e| {
                        tracing::warn!(
                            pattern = %self.pattern,
                            error = %e,
                            "rule pattern too large to compile; its unbounded form is used"
                        )
                    })
                    .ok()
            })
            .as_ref()
            .map(|r| r.is_match(hay))
    }
}

/// After this many searches a field set builds its steady-state set (see
/// [`FieldSet::steady`]): the extra build (~5 ms) pays off after some 500
/// mails, so a process that handles one mail never builds it.
const STEADY_AFTER: usize = 1000;

/// Added to the steady-state set only: it can never match, and since it
/// may start with any character no literal prefilter can serve the set.
const NO_PREFILTER: &str = "[^\\n]\\z\\A";

/// How often a field set has been searched (cloning copies the count).
#[derive(Debug, Default)]
struct Uses(AtomicUsize);

impl Clone for Uses {
    fn clone(&self) -> Self {
        Uses(AtomicUsize::new(self.0.load(Ordering::Relaxed)))
    }
}

/// The compiled patterns of one field: the folded ones run over the folded
/// text, the others over the text as it is.
///
/// Two sets serve the folded patterns. `folded` is built with the rules: the
/// regex engine puts a literal prefilter in front of it, which makes it
/// quick to build and quick on the first mails (little of the lazy DFA has
/// to be built), but twice as slow on every later mail. `steady` is the
/// same set without a prefilter, built after [`STEADY_AFTER`] searches for
/// processes that classify many mails.
#[derive(Debug, Clone)]
pub(super) struct FieldSet {
    folded: RegexSet,
    /// Guards (or exact folded patterns), as given to `folded`.
    folded_patterns: Vec<String>,
    /// Pattern index of each member of `folded`.
    folded_ids: Vec<usize>,
    /// For a member of `folded` that is a guard: the exact pattern.
    exact: Vec<Option<LazyRegex>>,
    steady: OnceLock<Option<RegexSet>>,
    uses: Uses,
    plain: RegexSet,
    /// Pattern index of each member of `plain`.
    plain_ids: Vec<usize>,
    pub(super) len: usize,
}

fn regex_set<I: IntoIterator<Item = S>, S: AsRef<str>>(
    patterns: I,
) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
}

impl FieldSet {
    pub(super) fn build(list: &PatternList) -> Result<FieldSet, regex::Error> {
        let mut fs = FieldSet {
            folded: RegexSet::empty(),
            folded_patterns: Vec::new(),
            folded_ids: Vec::new(),
            exact: Vec::new(),
            steady: OnceLock::new(),
            uses: Uses::default(),
            plain: RegexSet::empty(),
            plain_ids: Vec::new(),
            len: list.patterns.len(),
        };
        let mut plain = Vec::new();
        for (i, (p, f)) in list.patterns.iter().zip(&list.folded).enumerate() {
            match f {
                Some((guard, exact)) => {
                    fs.folded_patterns.push(guard.clone());
                    fs.folded_ids.push(i);
                    fs.exact.push(exact.as_ref().map(|e| LazyRegex {
                        pattern: e.clone(),
                        regex: OnceLock::new(),
                    }));
                }
                None => {
                    plain.push(p.as_str());
                    fs.plain_ids.push(i);
                }
            }
        }
        match regex_set(&fs.folded_patterns) {
            Ok(set) => fs.folded = set,
            Err(_) if !fs.folded_ids.is_empty() => {
                // Not expected (the folded forms are no larger than the
                // originals), but then the originals decide, as they did
                // before folding existed.
                let all = PatternList {
                    folded: vec![None; list.patterns.len()],
                    ..list.clone()
                };
                return FieldSet::build(&all);
            }
            Err(e) => return Err(e),
        }
        fs.plain = regex_set(&plain)?;
        Ok(fs)
    }

    /// The set to search the folded text with: `folded`, or after enough
    /// searches the steady-state set (if it builds, which it does whenever
    /// `folded` did).
    fn folded_set(&self) -> &RegexSet {
        if self.uses.0.fetch_add(1, Ordering::Relaxed) < STEADY_AFTER {
            return &self.folded;
        }
        self.steady
            .get_or_init(|| {
                regex_set(
                    self.folded_patterns
                        .iter()
                        .map(String::as_str)
                        .chain([NO_PREFILTER]),
                )
                .ok()
            })
            .as_ref()
            .unwrap_or(&self.folded)
    }

    /// Which patterns match `hay`, by pattern index.
    pub(super) fn matches(&self, hay: &str) -> Vec<bool> {
        let mut hits = vec![false; self.len];
        if !self.folded_ids.is_empty() {
            let text = fold_text(hay);
            for i in self.folded_set().matches(&text).iter() {
                // The steady-state set's extra member never matches.
                let Some(&id) = self.folded_ids.get(i) else {
                    continue;
                };
                // A guard matched: the exact pattern decides (if it cannot
                // be compiled, the guard's answer stands).
                hits[id] = match &self.exact[i] {
                    Some(exact) => exact.is_match(&text).unwrap_or(true),
                    None => true,
                };
            }
        }
        if !self.plain_ids.is_empty() {
            for i in self.plain.matches(hay).iter() {
                hits[self.plain_ids[i]] = true;
            }
        }
        hits
    }
}
#[cfg(test)]
mod tests {
    use super::super::test_support::PIECES;
    use super::*;
    use crate::ingest::classify::RuleSet;

    #[test]
    fn embedded_patterns_are_all_folded() {
        // A pattern without a folded form costs the slow case-insensitive
        // search again; the defaults must not have one.
        let rs = RuleSet::embedded().unwrap();
        assert!(
            rs.content.plain_ids.is_empty(),
            "{:?}",
            rs.content.plain_ids
        );
        assert!(!rs.content.folded_ids.is_empty());
    }

    /// The embedded rules, and each of their content patterns compiled alone.
    fn embedded_with_originals() -> &'static (RuleSet, Vec<Regex>) {
        static CELL: std::sync::OnceLock<(RuleSet, Vec<Regex>)> = std::sync::OnceLock::new();
        CELL.get_or_init(|| {
            let rs = RuleSet::embedded().unwrap();
            let originals = rs
                .sources
                .content
                .iter()
                .map(|p| Regex::new(p).unwrap())
                .collect();
            (rs, originals)
        })
    }

    #[test]
    fn guards_and_steady_set_agree_with_the_patterns() {
        let (rs, originals) = embedded_with_originals();
        let texts = [
            "Das Produktivsystem ist seit dem Update am Wochenende extrem langsam.",
            "Das Produktivsystem hat mit ein paar wirklich sehr langen Füllwörtern ohne jeden Punkt einen Fehler",
            "Die DATENSICHERUNG ist letzte Nacht FEHLGESCHLAGEN",
            "Die Datensicherung ist mit ein paar wirklich sehr langen Füllwörtern ohne Punkt fehlgeschlagen",
            "Seit Montag sehr langsam. Der Server ist nicht erreichbar!",
            "",
        ];
        let fresh = RuleSet::embedded().unwrap();
        for round in 0..2 {
            for t in texts {
                let want: Vec<bool> = originals.iter().map(|r| r.is_match(t)).collect();
                assert_eq!(fresh.content.matches(t), want, "round {round}: {t:?}");
            }
            // Second round: past the switch to the steady-state set.
            for _ in 0..STEADY_AFTER {
                fresh.content.matches("x");
            }
        }
        assert!(fresh.content.steady.get().is_some_and(Option::is_some));
        // Some patterns of the defaults are guarded (else the test is moot).
        assert!(rs.content.exact.iter().any(Option::is_some));
    }

    proptest::proptest! {
        #[test]
        fn rule_sets_match_like_the_patterns(
            parts in proptest::collection::vec(proptest::sample::select(PIECES), 0..10)
        ) {
            let text = parts.concat();
            let (rs, originals) = embedded_with_originals();
            let want: Vec<bool> = originals.iter().map(|r| r.is_match(&text)).collect();
            proptest::prop_assert_eq!(rs.content.matches(&text), want, "{:?}", text);
        }
    }
}
