//! The language of the mails a customer gets (issue 14, item 7): the
//! customer directory's (contact, then organisation), else the mailbox's
//! (`[imap.defaults] language`), else detected from the mail, else the
//! desk's — recorded on the ticket, so a staff reply later is in the same
//! language. Real SQLite and the real intake; the desk's language is German
//! unless a test says otherwise.

use std::path::Path;
use ticketd::config::Config;
use ticketd::keys::MacKey;
use ticketd::service::{Incoming, Intake, SourceDefaults};
use ticketd::store::Store;

const ENGLISH: &str = "Hi team,\r\n\r\nsince this morning the printer on the second floor only prints blank pages. \
    Could somebody have a look at it when you get a chance? We can use the one downstairs for now.\r\n\r\n\
    Thanks and best regards,\r\nTom Baker\r\n";

const GERMAN: &str = "Hallo zusammen,\r\n\r\nseit heute früh druckt der Drucker im zweiten Stock nur leere Seiten. \
    Könnte sich das bitte jemand ansehen? Wir weichen so lange auf den Drucker im Erdgeschoss aus.\r\n\r\n\
    Viele Grüße\r\nThomas Becker\r\n";

fn mail(from: &str, subject: &str, id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: support@desk.example\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
         Date: Thu, 03 Dec 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}"
    )
    .into_bytes()
}

async fn desk(dir: &Path) -> (Intake, Store) {
    desk_in(dir, "de").await
}

/// A desk whose own language is `language`.
async fn desk_in(dir: &Path, language: &str) -> (Intake, Store) {
    let cfg = Config::parse_str(
        &format!("[desk]\naddresses = [\"support@desk.example\"]\nlanguage = \"{language}\"\n"),
        &dir.join("ticketd.toml"),
    )
    .unwrap();
    let store = Store::open_sqlite(&dir.join("t.db"), 2).await.unwrap();
    store.migrate().await.unwrap();
    let customers = dir.join("customers");
    std::fs::create_dir_all(&customers).unwrap();
    std::fs::write(
        customers.join("c.toml"),
        "[[organisation]]\nid = \"stadtwerke\"\nname = \"Stadtwerke\"\ndomains = [\"stadtwerke.example\"]\n\
         language = \"de\"\ncontact_language = { \"j.smith@stadtwerke.example\" = \"en\" }\n\n\
         [[organisation]]\nid = \"northwind\"\nname = \"Northwind\"\ndomains = [\"northwind.example\"]\n",
    )
    .unwrap();
    let intake = Intake::new(&cfg, MacKey(vec![7; 32]))
        .with_customers(customers)
        .unwrap();
    (intake, store)
}

/// Takes one mail (from the mailbox with `defaults`) and returns the
/// subject and body of the confirmation it got.
async fn confirmation(
    intake: &Intake,
    store: &Store,
    raw: Vec<u8>,
    defaults: &SourceDefaults,
) -> (String, String) {
    let o = intake
        .ingest_batch_from(
            store,
            &[Incoming {
                raw,
                source: "imap:support/INBOX/1/1".into(),
                arrived: None,
            }],
            jiff::Timestamp::now(),
            defaults,
        )
        .await
        .pop()
        .unwrap()
        .unwrap();
    let number = o.ticket.expect("a ticket").0;
    let out = store.list_outbox().await.unwrap();
    let c = out
        .iter()
        .find(|m| m.kind == "confirmation" && m.ticket.as_deref() == Some(number.as_str()))
        .expect("a confirmation");
    (c.subject.clone(), c.raw.clone())
}

fn is_english(subject: &str, raw: &str) -> bool {
    subject.contains("Received:") && raw.contains("Received at")
}

fn is_german(subject: &str, raw: &str) -> bool {
    subject.contains("Eingangsbestätigung") && raw.contains("Eingangszeitstempel")
}

#[tokio::test]
async fn an_english_mail_gets_an_english_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let (s, raw) = confirmation(
        &intake,
        &store,
        mail(
            "Tom Baker <tom@example.org>",
            "Printer prints blank pages",
            "en1@example.org",
            ENGLISH,
        ),
        &SourceDefaults::default(),
    )
    .await;
    assert!(is_english(&s, &raw), "{s}\n{raw}");
    // An organisation without a language of its own: detection decides too.
    let (s, raw) = confirmation(
        &intake,
        &store,
        mail(
            "Ann <ann@northwind.example>",
            "Printer prints blank pages",
            "en2@northwind.example",
            ENGLISH,
        ),
        &SourceDefaults::default(),
    )
    .await;
    assert!(is_english(&s, &raw), "{s}\n{raw}");
}

#[tokio::test]
async fn a_german_mail_stays_german() {
    // On a desk whose own language is English.
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk_in(dir.path(), "en").await;
    let (s, raw) = confirmation(
        &intake,
        &store,
        mail(
            "Thomas <thomas@example.org>",
            "Drucker druckt leere Seiten",
            "de1@example.org",
            GERMAN,
        ),
        &SourceDefaults::default(),
    )
    .await;
    assert!(is_german(&s, &raw), "{s}\n{raw}");
    // Too little text to tell: the desk's language.
    let (s, raw) = confirmation(
        &intake,
        &store,
        mail("x@example.org", "VPN", "de2@example.org", "VPN?\r\n"),
        &SourceDefaults::default(),
    )
    .await;
    assert!(is_english(&s, &raw), "{s}\n{raw}");
}

#[tokio::test]
async fn the_directory_language_wins_over_detection() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    // The organisation says German; the mail is English.
    let (s, raw) = confirmation(
        &intake,
        &store,
        mail(
            "Pavel <p.novak@stadtwerke.example>",
            "Printer prints blank pages",
            "d1@stadtwerke.example",
            ENGLISH,
        ),
        &SourceDefaults::default(),
    )
    .await;
    assert!(is_german(&s, &raw), "{s}\n{raw}");
    // A contact of that organisation wants English, and writes German.
    let (s, raw) = confirmation(
        &intake,
        &store,
        mail(
            "John <J.Smith@stadtwerke.example>",
            "Drucker druckt leere Seiten",
            "d2@stadtwerke.example",
            GERMAN,
        ),
        &SourceDefaults::default(),
    )
    .await;
    assert!(is_english(&s, &raw), "{s}\n{raw}");
}

#[tokio::test]
async fn a_mailbox_default_wins_over_detection() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let english_box = SourceDefaults {
        language: Some("en".into()),
        ..SourceDefaults::default()
    };
    let german_box = SourceDefaults {
        language: Some("de".into()),
        ..SourceDefaults::default()
    };
    let (s, raw) = confirmation(
        &intake,
        &store,
        mail(
            "Thomas <thomas@example.org>",
            "Drucker druckt leere Seiten",
            "m1@example.org",
            GERMAN,
        ),
        &english_box,
    )
    .await;
    assert!(is_english(&s, &raw), "{s}\n{raw}");
    let (s, raw) = confirmation(
        &intake,
        &store,
        mail(
            "Tom <tom@example.org>",
            "Printer prints blank pages",
            "m2@example.org",
            ENGLISH,
        ),
        &german_box,
    )
    .await;
    assert!(is_german(&s, &raw), "{s}\n{raw}");
    // The directory still wins over the mailbox.
    let (s, raw) = confirmation(
        &intake,
        &store,
        mail(
            "John <j.smith@stadtwerke.example>",
            "Drucker druckt leere Seiten",
            "m3@stadtwerke.example",
            GERMAN,
        ),
        &german_box,
    )
    .await;
    assert!(is_english(&s, &raw), "{s}\n{raw}");
}

#[tokio::test]
async fn a_staff_reply_is_in_the_language_recorded_on_the_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, store) = desk(dir.path()).await;
    let o = intake
        .ingest_batch(
            &store,
            &[Incoming {
                raw: mail(
                    "Tom <tom@example.org>",
                    "Printer prints blank pages",
                    "r1@example.org",
                    ENGLISH,
                ),
                source: "pipe".into(),
                arrived: None,
            }],
            jiff::Timestamp::now(),
        )
        .await
        .pop()
        .unwrap()
        .unwrap();
    let number = o.ticket.unwrap().0;
    intake
        .act(
            &store,
            &number,
            &ticketd::service::StaffAction::Reply {
                text: "We replaced the toner cartridge.".into(),
                then_pending: false,
                cc: Vec::new(),
                staff_name: None,
            },
            "cli:anna",
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    let out = store.list_outbox().await.unwrap();
    let reply = out.iter().find(|m| m.kind == "reply").expect("the reply");
    assert!(
        reply.raw.contains("please keep") && !reply.raw.contains("bitte lassen"),
        "{}",
        reply.raw
    );
}
