//! The language of a customer's mail, for the mails ticketd writes back
//! when neither the customer directory nor the mailbox names one.
//!
//! Detection reads only the subject and the first [`DETECT_LIMIT`] bytes of
//! the writer's own text (quoted history cut off, see
//! [`classify::own_text`](super::classify::own_text)), so its cost is
//! bounded whatever the mail holds. It answers only when it is sure enough:
//! a short or mixed text gives `None`, and the caller uses the desk's
//! language.

use super::classify::{own_text, truncate};
use super::parse::ParsedMail;
use whatlang::{Detector, Lang};

/// Bytes of the body the detector reads: a greeting and the first
/// sentences decide a language as well as a whole mail does, and the
/// detector's time grows with its input (2 KB cost 150 µs per mail, 15 %
/// of a whole ingest; 512 bytes cost 67 µs, `cargo bench --bench pipeline
/// -- stages/language`).
pub const DETECT_LIMIT: usize = 512;

/// Below this confidence a guess is not taken (whatlang's 0–1 scale; short
/// texts such as "VPN Problem" score far below it).
const MIN_CONFIDENCE: f64 = 0.5;

/// The languages ticketd has templates for, as detected, with their codes.
const KNOWN: [(Lang, &str); 2] = [(Lang::Deu, "de"), (Lang::Eng, "en")];

/// The language code (`de`, `en`) of the mail's own text, or `None` when it
/// is too short, in another language, or too mixed to tell.
pub fn detect(mail: &ParsedMail) -> Option<&'static str> {
    detect_text(&mail.subject, &mail.body)
}

/// [`detect`] on a subject and a body.
pub fn detect_text(subject: &str, body: &str) -> Option<&'static str> {
    let body = own_text(subject, truncate(body, DETECT_LIMIT));
    let mut text = String::with_capacity(subject.len() + body.len() + 1);
    text.push_str(subject);
    text.push('\n');
    text.push_str(body);
    // Neighbouring European languages are candidates too, so that a French
    // mail is not forced into German or English: it gets the desk's.
    let detector = Detector::with_allowlist(vec![
        Lang::Deu,
        Lang::Eng,
        Lang::Fra,
        Lang::Nld,
        Lang::Ita,
        Lang::Spa,
        Lang::Por,
        Lang::Pol,
        Lang::Dan,
        Lang::Swe,
    ]);
    let info = detector.detect(&text)?;
    if info.confidence() < MIN_CONFIDENCE {
        return None;
    }
    KNOWN
        .iter()
        .find(|(l, _)| *l == info.lang())
        .map(|(_, code)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_and_german_mails_are_told_apart() {
        assert_eq!(
            detect_text(
                "Printer on the second floor",
                "Hi team,\n\nthe printer on the second floor only prints blank pages since this morning. \
                 Could somebody have a look when you get a chance?\n\nThanks, Tom"
            ),
            Some("en")
        );
        assert_eq!(
            detect_text(
                "Drucker im 2. OG",
                "Hallo zusammen,\n\nder Drucker im zweiten Stock druckt seit heute früh nur leere Seiten. \
                 Könnte sich das bitte jemand ansehen?\n\nDanke, Thomas"
            ),
            Some("de")
        );
    }

    #[test]
    fn too_little_text_or_another_language_is_no_answer() {
        assert_eq!(detect_text("VPN", ""), None);
        assert_eq!(
            detect_text(
                "Imprimante",
                "Bonjour, notre imprimante n'imprime plus que des pages blanches depuis ce matin. \
                 Pouvez-vous regarder s'il vous plaît ?"
            ),
            None
        );
    }

    #[test]
    fn quoted_history_does_not_decide() {
        let body = "Thanks a lot, the printer works again since you restarted it this morning. \
                    Have a nice weekend!\n\nBest regards, Tom\n\n\
                    Am 03.12.2026 um 09:12 schrieb Support:\n\
                    > Sehr geehrter Herr Baker, wir haben den Drucker neu gestartet und die \
                    Warteschlange geleert. Bitte prüfen Sie, ob der Druck jetzt wieder funktioniert. \
                    Mit freundlichen Grüßen, Ihr Support-Team der Beispiel GmbH";
        assert_eq!(detect_text("Re: Drucker", body), Some("en"));
    }

    #[test]
    fn a_huge_body_costs_only_its_prefix() {
        let body = "The server is down and nobody can work. ".repeat(200_000);
        let t = std::time::Instant::now();
        assert_eq!(detect_text("Outage", &body), Some("en"));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}
