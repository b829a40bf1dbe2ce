//! Deterministic mail workload for the benchmarks.
//!
//! Shared by `benches/pipeline.rs` (`mod workload;`) and
//! `examples/gen_workload.rs` / `examples/mta_bench.rs`
//! (`#[path = "../benches/workload.rs"] mod workload;`), so the criterion
//! bench and the end-to-end scripts measure the same mails.
//!
//! The workload is `new` first mails of customers plus `replies` follow-ups,
//! in an order where every reply comes after the mail it answers:
//!
//! - new mails are 2–5 KB: a third `text/plain` (8bit or quoted-printable),
//!   a third `multipart/alternative` (text + HTML), a third
//!   `multipart/mixed` with a small base64 attachment; German and English
//!   support texts built from phrase pools so the severity rules find
//!   outages, degraded systems, malfunctions, questions and plain
//!   correspondence; subjects with umlauts are RFC 2047 encoded (B or Q);
//!   every sender has an address of its own, almost all on a domain of their
//!   own, and every mail has a unique Message-ID;
//! - a reply carries ONLY `In-Reply-To`/`References` naming the customer's
//!   own Message-ID of an earlier new mail, subject `Re: <original>`, no
//!   ticket tag: it can only be threaded by the Message-ID the store kept
//!   for the ticket.
//!
//! Everything comes from a seeded SplitMix64 generator and a fixed start
//! date, so the same arguments give byte-identical files on every machine.

// Each user of this module needs a different part of it.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// The seed used by the bench and by `gen_workload` unless told otherwise.
pub const DEFAULT_SEED: u64 = 0x7469_636b_6574_6400;

/// Smallest and largest size of a generated mail, in bytes.
pub const MIN_SIZE: usize = 2 * 1024;
/// See [`MIN_SIZE`].
pub const MAX_SIZE: usize = 5 * 1024;

/// Name of the manifest `write_dir` puts next to the `.eml` files.
pub const MANIFEST: &str = "manifest.tsv";

/// The desk's address (ticketd's default configuration).
pub const SUPPORT_ADDRESS: &str = "support@example.com";

/// The MIME shape of a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One `text/plain` part.
    Plain,
    /// `multipart/alternative`: text/plain and text/html.
    Alternative,
    /// `multipart/mixed`: text/plain and one base64 attachment.
    Mixed,
}

impl Shape {
    /// Short name for statistics.
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Plain => "text/plain",
            Shape::Alternative => "multipart/alternative",
            Shape::Mixed => "multipart/mixed",
        }
    }
}

/// One generated mail.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The raw RFC 5322 bytes (LF line ends, as in a Maildir).
    pub raw: Vec<u8>,
    /// Its Message-ID, without brackets.
    pub message_id: String,
    /// For a reply: index (in the workload) of the new mail it answers.
    pub reply_to: Option<usize>,
    /// Its MIME shape.
    pub shape: Shape,
    /// True for a German text.
    pub german: bool,
    /// True when the subject is RFC 2047 encoded.
    pub encoded_subject: bool,
}

impl Mail {
    /// True for a reply.
    pub fn is_reply(&self) -> bool {
        self.reply_to.is_some()
    }
}

/// File name of the mail at `index` in the workload: `0000001.eml`, …
/// Name order is workload order.
pub fn file_name(index: usize) -> String {
    format!("{:07}.eml", index + 1)
}

// ------------------------------------------------------------------ random

/// SplitMix64: tiny, fast, and the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

// ------------------------------------------------------------------ texts

/// Severity class a new mail is written for (what the rules should find).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    Outage,
    Degraded,
    Malfunction,
    Question,
    Plain,
}

const TOPIC_WEIGHTS: &[(Topic, usize)] = &[
    (Topic::Outage, 10),
    (Topic::Degraded, 20),
    (Topic::Malfunction, 35),
    (Topic::Question, 25),
    (Topic::Plain, 10),
];

const DE_FIRST: &[&str] = &[
    "Jürgen",
    "Anna",
    "Katrin",
    "Björn",
    "Sören",
    "Michael",
    "Sabine",
    "Özlem",
    "Thomas",
    "Ute",
    "Jörg",
    "Petra",
    "Lukas",
    "Marie",
    "Günther",
    "Hannelore",
    "Jan",
    "Lea",
];
const DE_LAST: &[&str] = &[
    "Müller",
    "Schäfer",
    "Weiß",
    "Köhler",
    "Groß",
    "Becker",
    "Hoffmann",
    "Schröder",
    "Krüger",
    "Wagner",
    "Neumann",
    "Schmitt",
    "Jäger",
    "Brandt",
    "Yılmaz",
    "Lange",
];
const EN_FIRST: &[&str] = &[
    "Emma", "Oliver", "James", "Sophie", "Liam", "Grace", "Noah", "Chloe", "Harry", "Amelia",
    "Jack", "Isla",
];
const EN_LAST: &[&str] = &[
    "Smith", "Johnson", "Brown", "Taylor", "Walker", "Clarke", "Wright", "Evans", "O'Brien",
    "Hughes", "Patel", "Murphy",
];

const DE_COMPANY_A: &[&str] = &[
    "Nordlicht",
    "Sonnenschein",
    "Alpen",
    "Rhein",
    "Elbe",
    "Hansa",
    "Isar",
    "Schwarzwald",
    "Bodensee",
    "Lüneburger",
    "Spreewald",
    "Mainfranken",
];
const DE_COMPANY_B: &[&str] = &[
    "Logistik",
    "Maschinenbau",
    "Steuerberatung",
    "Autohaus",
    "Druckerei",
    "Bäckerei",
    "Zahnarztpraxis",
    "Kanzlei",
    "Bau",
    "Elektrotechnik",
    "Möbelwerk",
    "Getränkehandel",
];
const DE_LEGAL: &[&str] = &["GmbH", "GmbH & Co. KG", "AG", "e.K.", "KG"];
const EN_COMPANY_A: &[&str] = &[
    "Riverside",
    "Northgate",
    "Oakwood",
    "Highland",
    "Bluewater",
    "Kingsbridge",
    "Ashford",
    "Silverline",
];
const EN_COMPANY_B: &[&str] = &[
    "Logistics",
    "Engineering",
    "Accounting",
    "Motors",
    "Printing",
    "Dental Care",
    "Legal",
    "Construction",
];
const EN_LEGAL: &[&str] = &["Ltd", "LLC", "Inc.", "plc"];
const FREEMAIL: &[&str] = &[
    "gmx.de",
    "web.de",
    "gmail.com",
    "t-online.de",
    "outlook.com",
];

const DE_CITIES: &[&str] = &[
    "München",
    "Köln",
    "Düsseldorf",
    "Nürnberg",
    "Lübeck",
    "Hamburg",
    "Stuttgart",
    "Würzburg",
    "Osnabrück",
    "Görlitz",
];
const EN_CITIES: &[&str] = &[
    "Leeds",
    "Bristol",
    "Manchester",
    "Glasgow",
    "Cardiff",
    "Dublin",
    "York",
];
const DE_SYSTEMS: &[&str] = &[
    "ERP-System",
    "Warenwirtschaft",
    "Exchange-Server",
    "VPN",
    "Terminalserver",
    "Webshop",
    "Datenbankserver",
    "Kassensystem",
    "Fileserver",
];
const EN_SYSTEMS: &[&str] = &[
    "ERP system",
    "mail server",
    "VPN",
    "terminal server",
    "web shop",
    "database server",
    "file server",
    "booking system",
];

const DE_SUBJECTS: &[(Topic, &[&str])] = &[
    (
        Topic::Outage,
        &[
            "Dringend: {system} ausgefallen",
            "NOTFALL – Produktion steht",
            "Totalausfall {system} in {city}",
            "Niemand kann arbeiten!",
            "{system} komplett down",
        ],
    ),
    (
        Topic::Degraded,
        &[
            "{system} extrem langsam",
            "Datensicherung fehlgeschlagen",
            "Verbindungsabbrüche zum {system}",
            "Zeitüberschreitung beim Buchen",
            "Produktivsystem reagiert kaum",
        ],
    ),
    (
        Topic::Malfunction,
        &[
            "Fehlermeldung beim Export",
            "Outlook stürzt ab",
            "Passwort abgelaufen – Anmeldung nicht möglich",
            "Scanner im 2. OG geht nicht",
            "Problem mit dem {system}",
            "Kalender synchronisiert nicht",
        ],
    ),
    (
        Topic::Question,
        &[
            "Frage zur Lizenzierung",
            "Neuer Benutzer für Frau {last}",
            "Anfrage Schulungstermine",
            "Angebot für zusätzliche Arbeitsplätze",
            "Wie können wir das Postfach freigeben?",
        ],
    ),
    (
        Topic::Plain,
        &[
            "Unterlagen für Donnerstag",
            "Rückmeldung zu unserem Telefonat",
            "Termin nächste Woche",
            "Kurze Info zum Umzug in {city}",
        ],
    ),
];

const EN_SUBJECTS: &[(Topic, &[&str])] = &[
    (
        Topic::Outage,
        &[
            "URGENT: {system} is down",
            "Emergency - nobody can work",
            "Complete outage at our {city} office",
            "Production at a standstill",
        ],
    ),
    (
        Topic::Degraded,
        &[
            "{system} extremely slow",
            "Backup failed last night",
            "Intermittent disconnects from the {system}",
            "Reports time out",
        ],
    ),
    (
        Topic::Malfunction,
        &[
            "Error when exporting invoices",
            "Outlook crashes on startup",
            "Unable to log in after password change",
            "Scanner on 2nd floor not working",
            "Problem with the {system}",
        ],
    ),
    (
        Topic::Question,
        &[
            "Question about licensing",
            "New user for {first}",
            "Request for quotation: extra workstations",
            "How can we share a mailbox?",
        ],
    ),
    (
        Topic::Plain,
        &[
            "Documents for Thursday",
            "Following up on our call",
            "Meeting next week",
            "Office move in {city}",
        ],
    ),
];

const DE_OPENING: &[(Topic, &[&str])] = &[
    (
        Topic::Outage,
        &[
            "seit heute Morgen um {time} Uhr ist unser {system} komplett ausgefallen. Niemand kann arbeiten, alle Mitarbeiter sind betroffen.",
            "bei uns steht seit {time} Uhr die Produktion still, das {system} ist nicht erreichbar und die Kasse geht gar nicht mehr.",
            "wir haben einen Totalausfall im Standort {city}: Server und Telefonie sind komplett offline, gar nichts geht mehr.",
            "es sieht nach einem Verschlüsselungstrojaner aus, mehrere Laufwerke sind verschlüsselt und es liegt eine Lösegeldforderung vor. Das ist ein Notfall!",
        ],
    ),
    (
        Topic::Degraded,
        &[
            "unser Produktivsystem ist seit dem Update am Wochenende extrem langsam, eine Buchung dauert über eine Minute.",
            "die Datensicherung ist letzte Nacht fehlgeschlagen, im Protokoll steht ein Fehler beim Schreiben auf das Band.",
            "die Verbindung zum {system} bricht ständig ab, seit gestern teilweise nicht erreichbar.",
            "beim Buchen im {system} kommt es immer wieder zu einer Zeitüberschreitung, die Kollegen müssen alles doppelt erfassen.",
        ],
    ),
    (
        Topic::Malfunction,
        &[
            "beim Export der Rechnungen nach DATEV erscheint eine Fehlermeldung und die Datei bleibt leer.",
            "Outlook stürzt immer wieder ab, sobald ich einen Anhang öffnen möchte.",
            "mein Passwort ist abgelaufen und ich kann mich nicht mehr am {system} anmelden.",
            "der Scanner im zweiten Stock funktioniert nicht, die Dokumente kommen nicht im Ordner an.",
            "der Kalender auf dem Diensthandy synchronisiert nicht mehr mit dem Postfach, Termine fehlen.",
        ],
    ),
    (
        Topic::Question,
        &[
            "wir hätten eine Frage zur Lizenzierung der neuen Version: Brauchen wir für jeden Arbeitsplatz eine eigene Lizenz?",
            "ist es möglich, für unsere neue Kollegin Frau {last} einen zusätzlichen Benutzer einzurichten? Sie fängt am Ersten an.",
            "bitte um Information zu den Schulungsterminen im nächsten Quartal, wir würden gern drei Kollegen anmelden.",
            "wie können wir ein gemeinsames Postfach für die Buchhaltung einrichten, auf das vier Personen zugreifen?",
        ],
    ),
    (
        Topic::Plain,
        &[
            "anbei wie besprochen die Unterlagen für den Termin am Donnerstag.",
            "danke für das nette Telefonat heute Vormittag. Wie vereinbart schicke ich Ihnen die Liste der Arbeitsplätze.",
            "nur zur Info: Unser Büro in {city} zieht zum Monatsende in die Hauptstraße {n}.",
        ],
    ),
];

const EN_OPENING: &[(Topic, &[&str])] = &[
    (
        Topic::Outage,
        &[
            "since {time} this morning our {system} is completely down and nobody can work. All users are affected.",
            "we have a full outage at the {city} office: the server is unreachable and production is at a standstill.",
            "it looks like ransomware, several shares are encrypted and there is a ransom note. This is an emergency.",
        ],
    ),
    (
        Topic::Degraded,
        &[
            "the production database has been extremely slow since Monday and the nightly reports time out.",
            "last night's backup failed with a write error and the replication to the second site is degraded.",
            "our {system} disconnects intermittently, the users lose their sessions several times an hour.",
        ],
    ),
    (
        Topic::Malfunction,
        &[
            "exporting invoices to the accounting package gives an error and the file stays empty.",
            "Outlook crashes on startup since this morning's update, safe mode does not help either.",
            "I am unable to log in to the {system} since the password change yesterday.",
            "the scanner on the second floor is not working, the scans never arrive in the shared folder.",
        ],
    ),
    (
        Topic::Question,
        &[
            "we have a question about licensing: do we need a licence for every workstation or per named user?",
            "could you tell us how we can set up a new user for {first}, who starts on the first of the month?",
            "please send us a quotation for five additional workstations including installation.",
        ],
    ),
    (
        Topic::Plain,
        &[
            "as discussed on the phone, please find the documents for Thursday's meeting below.",
            "thanks for the call this morning. As agreed, here is the list of workstations at our site.",
            "just so you know: our {city} office moves to {n} High Street at the end of the month.",
        ],
    ),
];

const DE_FILLER: &[&str] = &[
    "Betroffen ist der Arbeitsplatz {host} im Büro {city}, Windows 11 mit Office 365 in der aktuellen Version. Andere Arbeitsplätze verhalten sich genauso.",
    "Wir haben den Rechner bereits neu gestartet, den Cache geleert und die Netzwerkverbindung geprüft, leider ohne Erfolg.",
    "Zur Einordnung: Wir sind ein mittelständisches Unternehmen mit rund {n} Mitarbeitern an {k} Standorten, die Buchhaltung sitzt in {city}.",
    "Die Änderung an der Firewall hat Ihr Kollege Herr Weiß letzte Woche vorgenommen; seitdem beobachten wir das Verhalten vor allem vormittags.",
    "Im Anhang bzw. unten finden Sie die Angaben, die Sie beim letzten Mal angefragt hatten: Kundennummer {cust}, Vertrag {contract}, Ansprechpartner vor Ort bin ich.",
    "Ich bin heute bis 17 Uhr unter der unten stehenden Durchwahl zu erreichen, danach bitte per Mail. Morgen ab 8 Uhr bin ich wieder im Haus.",
    "Könnten Sie sich das bitte zeitnah ansehen? Für Rückfragen stehe ich gern zur Verfügung, auch eine Fernwartung über TeamViewer ist jederzeit möglich.",
    "Die Kolleginnen in der Auftragsannahme arbeiten vorübergehend mit Papierlisten, das ist auf Dauer natürlich keine Lösung.",
    "Laut unserem Dienstleister für die Telefonanlage liegt es nicht an der Leitung; die Messwerte der letzten Tage sind unauffällig.",
    "Zusätzlich ist uns aufgefallen, dass die Anmeldung an den Thin Clients morgens länger dauert als sonst, bis zu zwei Minuten.",
    "Das Verhalten lässt sich reproduzieren: Programm öffnen, Mandant {n} wählen, Auswertung starten – nach etwa dreißig Sekunden kommt die Meldung.",
    "Unsere Geschäftsführung möchte bis Freitag wissen, wie es weitergeht, deshalb wäre ein kurzer Zwischenstand sehr hilfreich.",
];

const EN_FILLER: &[&str] = &[
    "The affected machine is {host} in our {city} office, Windows 11 with the current Microsoft 365 apps. Other workstations behave the same way.",
    "We have already restarted the machine, cleared the cache and checked the network connection, without success.",
    "For context: we are a company of about {n} people at {k} sites, accounting is based in {city}.",
    "Your colleague changed the firewall rules last week; since then we see this behaviour mostly in the mornings.",
    "Below are the details you asked for last time: customer number {cust}, contract {contract}, and I am the contact on site.",
    "I am available on the extension below until 5 pm today, after that by email. Tomorrow I am back from 8 am.",
    "Could you please look into this soon? Happy to answer questions, and remote access via TeamViewer is fine at any time.",
    "The order desk is working with paper lists for now, which of course is not a solution for long.",
    "According to our telephone provider the line is fine; the measurements of the last few days look normal.",
    "We also noticed that logging on to the thin clients takes longer than usual in the morning, up to two minutes.",
    "Steps to reproduce: open the application, choose company {n}, run the monthly report - after about thirty seconds the message appears.",
    "Our managing director would like to know by Friday how we proceed, so a short status update would be very helpful.",
];

const LOG_LINES: &[&str] = &[
    "{date} 08:{mm}:{ss},117 ERROR [pool-3-thread-7] c.e.erp.sync.Worker - Connection reset by peer",
    "{date} 08:{mm}:{ss},402 WARN  [main] o.h.engine.jdbc.spi.SqlExceptionHelper - SQL Error: 1205, SQLState: 40001",
    "{date} 08:{mm}:{ss},009 INFO  [scheduler] BackupJob - job {n} started on target LTO-7",
    "{date} 08:{mm}:{ss},771 ERROR [scheduler] BackupJob - write failed: device not ready",
    "{date} 08:{mm}:{ss},250 WARN  [http-nio-8443-exec-4] SessionManager - session expired for user {user}",
];

const DE_GREETING: &[&str] = &[
    "Hallo zusammen,",
    "Sehr geehrte Damen und Herren,",
    "Guten Tag Herr Schäfer,",
    "Liebes Support-Team,",
    "Moin,",
];
const EN_GREETING: &[&str] = &["Hello,", "Dear support team,", "Hi there,", "Good morning,"];
const DE_CLOSING: &[&str] = &[
    "Mit freundlichen Grüßen",
    "Viele Grüße",
    "Beste Grüße",
    "Danke und Gruß",
];
const EN_CLOSING: &[&str] = &["Best regards", "Kind regards", "Thanks,", "Many thanks"];

const DE_REPLY: &[&str] = &[
    "vielen Dank für die schnelle Rückmeldung. Eine Ergänzung noch: Das Verhalten tritt auch am Standort {city} auf.",
    "kurze Rückmeldung: Nach dem Neustart lief es etwa eine Stunde, jetzt ist der Zustand wieder wie vorher.",
    "anbei noch die Angaben, um die Sie gebeten hatten. Die Kollegin Frau {last} ist heute Nachmittag vor Ort.",
    "danke, das hat geholfen! Bitte lassen Sie den Vorgang aber noch bis Freitag offen, wir beobachten das weiter.",
];
const EN_REPLY: &[&str] = &[
    "thanks for getting back to us so quickly. One more thing: the same happens at the {city} office.",
    "quick update: after the restart it worked for about an hour, now it is back to the previous state.",
    "here are the details you asked for. My colleague {first} is on site this afternoon.",
    "thanks, that helped! Please keep this open until Friday though, we will keep an eye on it.",
];

const HTML_STYLE: &str = "<style type=\"text/css\">body{font-family:Calibri,Arial,sans-serif;font-size:11pt;color:#1f1f1f} p{margin:0 0 8pt 0} .sig{color:#5f5f5f;font-size:9pt}</style>";

// ------------------------------------------------------------------ encoders

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 without line breaks.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Base64 in lines of 76 characters, each ending in LF.
fn base64_lines(data: &[u8]) -> String {
    let flat = base64(data);
    let mut out = String::with_capacity(flat.len() + flat.len() / 76 + 1);
    for line in flat.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(line).unwrap_or(""));
        out.push('\n');
    }
    out
}

/// Quoted-printable (RFC 2045) with soft line breaks at 76 columns.
fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 11 / 10);
    for line in text.split('\n') {
        let bytes = line.as_bytes();
        let mut col = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let plain = (b == b' ' && !last) || (b.is_ascii_graphic() && b != b'=');
            let piece_len = if plain { 1 } else { 3 };
            if col + piece_len > 75 {
                out.push_str("=\n");
                col = 0;
            }
            if plain {
                out.push(b as char);
            } else {
                let _ = write!(out, "={b:02X}");
            }
            col += piece_len;
        }
        out.push('\n');
    }
    out.pop();
    out
}

/// An RFC 2047 header value: ASCII stays as it is; anything else becomes
/// encoded words (B or Q), folded so no line exceeds 76 characters.
fn encode_header(value: &str, use_b: bool) -> String {
    if value.is_ascii() {
        return value.to_string();
    }
    // Split on character boundaries into chunks that encode to < 60 chars.
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        let mut probe = chunk.clone();
        probe.push(c);
        let len = if use_b {
            probe.len().div_ceil(3) * 4
        } else {
            q_encode(&probe).len()
        };
        if len > 45 && !chunk.is_empty() {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            if use_b {
                format!("=?UTF-8?B?{}?=", base64(w.as_bytes()))
            } else {
                format!("=?UTF-8?Q?{}?=", q_encode(w))
            }
        })
        .collect::<Vec<_>>()
        .join("\n ")
}

/// The `Q` encoding of RFC 2047 for use in a Subject or a phrase.
fn q_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for &b in s.as_bytes() {
        match b {
            b' ' => out.push('_'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "={b:02X}");
            }
        }
    }
    out
}

/// `Name <address>` with the name quoted or encoded as needed.
fn mailbox(name: &str, address: &str) -> String {
    if !name.is_ascii() {
        format!("{} <{address}>", encode_header(name, false))
    } else if name.contains(['\'', '.', ',', '&']) {
        format!("\"{name}\" <{address}>")
    } else {
        format!("{name} <{address}>")
    }
}

/// Lower-case ASCII for addresses and domains: umlauts transliterated.
fn ascii_slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            'ä' | 'Ä' => out.push_str("ae"),
            'ö' | 'Ö' => out.push_str("oe"),
            'ü' | 'Ü' => out.push_str("ue"),
            'ß' => out.push_str("ss"),
            'ı' => out.push('i'),
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_lowercase()),
            _ => {}
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// RFC 5322 date for a Unix time, at UTC+01:00.
fn rfc5322_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let local = unix + 3600;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0100",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// ------------------------------------------------------------------ people

/// A customer: who writes the new mail and (mostly) its replies.
#[derive(Debug, Clone)]
struct Person {
    german: bool,
    first: String,
    last: String,
    address: String,
    company: String,
    domain: String,
    city: String,
    system: String,
    phone: String,
}

impl Person {
    fn new(rng: &mut Rng, index: usize) -> Person {
        let german = rng.chance(60);
        let (first, last) = if german {
            (rng.pick(DE_FIRST), rng.pick(DE_LAST))
        } else {
            (rng.pick(EN_FIRST), rng.pick(EN_LAST))
        };
        let company = if german {
            format!(
                "{} {} {}",
                rng.pick(DE_COMPANY_A),
                rng.pick(DE_COMPANY_B),
                rng.pick(DE_LEGAL)
            )
        } else {
            format!(
                "{} {} {}",
                rng.pick(EN_COMPANY_A),
                rng.pick(EN_COMPANY_B),
                rng.pick(EN_LEGAL)
            )
        };
        // 8 % of the customers write from a free-mail domain; everybody else
        // from a domain of their own (the index makes it unique).
        let (domain, local) = if rng.chance(8) {
            (
                rng.pick(FREEMAIL).to_string(),
                format!("{}.{}{}", ascii_slug(first), ascii_slug(last), index),
            )
        } else {
            let base: String = company
                .split(' ')
                .take(2)
                .map(ascii_slug)
                .collect::<Vec<_>>()
                .join("-");
            let tld = if german {
                "de"
            } else {
                rng.pick(&["co.uk", "com", "ie"])
            };
            (
                format!("{base}-{index}.{tld}"),
                format!("{}.{}", ascii_slug(first), ascii_slug(last)),
            )
        };
        let city = if german {
            rng.pick(DE_CITIES)
        } else {
            rng.pick(EN_CITIES)
        };
        let system = if german {
            rng.pick(DE_SYSTEMS)
        } else {
            rng.pick(EN_SYSTEMS)
        };
        Person {
            german,
            first: first.to_string(),
            last: last.to_string(),
            address: format!("{local}@{domain}"),
            company,
            domain,
            city: city.to_string(),
            system: system.to_string(),
            phone: format!(
                "+{} {} {}-{}",
                if german { 49 } else { 44 },
                rng.range(20, 989),
                rng.range(100_000, 999_999),
                rng.range(10, 99)
            ),
        }
    }

    fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }

    fn signature(&self, rng: &mut Rng) -> String {
        let closing = if self.german {
            rng.pick(DE_CLOSING)
        } else {
            rng.pick(EN_CLOSING)
        };
        let role = if self.german {
            rng.pick(&[
                "IT-Leitung",
                "Buchhaltung",
                "Geschäftsführung",
                "Empfang",
                "Vertrieb",
            ])
        } else {
            rng.pick(&[
                "IT Manager",
                "Accounts",
                "Office Manager",
                "Operations",
                "Sales",
            ])
        };
        format!(
            "{closing}\n{}\n\n-- \n{}\n{role}\n{}\n{}\nTel. {}\n{}",
            self.first,
            self.name(),
            self.company,
            self.city,
            self.phone,
            if self.german {
                "Diese E-Mail enthält vertrauliche Informationen. Wenn Sie nicht der richtige Adressat sind, informieren Sie bitte sofort den Absender."
            } else {
                "This email may contain confidential information. If you are not the intended recipient, please notify the sender immediately."
            }
        )
    }
}

/// Fills `{placeholders}` from the person and the random generator.
fn fill(template: &str, p: &Person, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let key = &rest[start + 1..start + len];
        match key {
            "system" => out.push_str(&p.system),
            "city" => out.push_str(&p.city),
            "first" => out.push_str(&p.first),
            "last" => out.push_str(&p.last),
            "time" => {
                let _ = write!(out, "{:02}:{:02}", rng.range(6, 10), rng.below(60));
            }
            "host" => {
                let _ = write!(
                    out,
                    "{}-{:02}",
                    rng.pick(&["PC-BUCH", "PC-VERTRIEB", "NB-GF", "WS-LAGER", "TC-EMPF"]),
                    rng.range(1, 40)
                );
            }
            "n" => {
                let _ = write!(out, "{}", rng.range(12, 480));
            }
            "k" => {
                let _ = write!(out, "{}", rng.range(2, 9));
            }
            "cust" => {
                let _ = write!(out, "K-{}", rng.range(10_000, 99_999));
            }
            "contract" => {
                let _ = write!(out, "SV-{}-{:03}", rng.range(2019, 2025), rng.below(1000));
            }
            "date" => {
                let _ = write!(out, "2025-03-{:02}", rng.range(1, 28));
            }
            "mm" | "ss" => {
                let _ = write!(out, "{:02}", rng.below(60));
            }
            "user" => out.push_str(&ascii_slug(&p.last)),
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

fn topic_texts<'a>(table: &'a [(Topic, &'a [&'a str])], t: Topic) -> &'a [&'a str] {
    table
        .iter()
        .find(|(k, _)| *k == t)
        .map(|(_, v)| *v)
        .unwrap_or(&[])
}

fn pick_topic(rng: &mut Rng) -> Topic {
    let total: usize = TOPIC_WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut x = rng.below(total);
    for &(t, w) in TOPIC_WEIGHTS {
        if x < w {
            return t;
        }
        x -= w;
    }
    Topic::Plain
}

// ------------------------------------------------------------------ rendering

/// An attachment of a multipart/mixed mail.
#[derive(Debug, Clone)]
struct Attach {
    content_type: &'static str,
    /// The Content-Disposition filename parameter, ready to print.
    filename_param: String,
    data: Vec<u8>,
}

fn make_attachment(rng: &mut Rng, p: &Person) -> Attach {
    match rng.below(3) {
        0 => {
            let mut log = String::new();
            for _ in 0..rng.range(3, 8) {
                log.push_str(&fill(rng.pick(LOG_LINES), p, rng));
                log.push('\n');
            }
            let name = if p.german {
                "fehlerprotokoll.txt"
            } else {
                "error.log"
            };
            Attach {
                content_type: "text/plain; charset=utf-8",
                filename_param: format!("filename=\"{name}\""),
                data: log.into_bytes(),
            }
        }
        1 => {
            let mut data = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
            for _ in 0..rng.range(300, 700) {
                data.push(rng.next_u64() as u8);
            }
            Attach {
                content_type: "image/png",
                filename_param: format!("filename=\"screenshot_{}.png\"", rng.range(1, 99)),
                data,
            }
        }
        _ => {
            let mut data =
                b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n".to_vec();
            for _ in 0..rng.range(250, 600) {
                data.push(rng.next_u64() as u8);
            }
            data.extend_from_slice(b"\n%%EOF\n");
            // RFC 2231 with an umlaut for the German ones.
            let filename_param = if p.german {
                "filename*=UTF-8''Rechnung_M%C3%A4rz.pdf".to_string()
            } else {
                "filename=\"invoice_march.pdf\"".to_string()
            };
            Attach {
                content_type: "application/pdf",
                filename_param,
                data,
            }
        }
    }
}

/// Everything that stays fixed while the body grows to its target size.
#[derive(Debug, Clone)]
struct Draft {
    headers: String,
    shape: Shape,
    qp: bool,
    boundary: String,
    attachment: Option<Attach>,
}

impl Draft {
    fn render(&self, text: &str) -> Vec<u8> {
        let mut m = String::with_capacity(MAX_SIZE + 1024);
        m.push_str(&self.headers);
        let cte = if text.is_ascii() {
            "7bit"
        } else if self.qp {
            "quoted-printable"
        } else {
            "8bit"
        };
        let encoded = |t: &str| {
            if cte == "quoted-printable" {
                quoted_printable(t)
            } else {
                t.to_string()
            }
        };
        match self.shape {
            Shape::Plain => {
                let _ = write!(
                    m,
                    "Content-Type: text/plain; charset=utf-8; format=flowed\nContent-Transfer-Encoding: {cte}\n\n{}\n",
                    encoded(text)
                );
            }
            Shape::Alternative => {
                let b = &self.boundary;
                let mut html = String::with_capacity(text.len() * 2);
                let _ = writeln!(
                    html,
                    "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">{HTML_STYLE}</head><body>"
                );
                for para in text.split("\n\n") {
                    let class = if para.starts_with("-- ") {
                        " class=\"sig\""
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        html,
                        "<p{class}>{}</p>",
                        html_escape(para).replace('\n', "<br>\n")
                    );
                }
                html.push_str("</body></html>");
                let _ = write!(
                    m,
                    "Content-Type: multipart/alternative; boundary=\"{b}\"\n\nThis is a multi-part message in MIME format.\n\n--{b}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: {cte}\n\n{}\n\n--{b}\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: {cte}\n\n{}\n\n--{b}--\n",
                    encoded(text),
                    encoded(&html)
                );
            }
            Shape::Mixed => {
                let b = &self.boundary;
                let _ = write!(
                    m,
                    "Content-Type: multipart/mixed; boundary=\"{b}\"\n\nThis is a multi-part message in MIME format.\n\n--{b}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: {cte}\n\n{}\n\n",
                    encoded(text)
                );
                if let Some(a) = &self.attachment {
                    let _ = write!(
                        m,
                        "--{b}\nContent-Type: {}\nContent-Disposition: attachment; {}\nContent-Transfer-Encoding: base64\n\n{}\n",
                        a.content_type,
                        a.filename_param,
                        base64_lines(&a.data)
                    );
                }
                let _ = writeln!(m, "--{b}--");
            }
        }
        m.into_bytes()
    }
}

/// Grows the body paragraph by paragraph until the mail reaches `target`
/// bytes (never beyond [`MAX_SIZE`]).
fn grow(
    draft: &Draft,
    head: &[String],
    tail: &str,
    target: usize,
    mut more: impl FnMut() -> String,
) -> (Vec<u8>, String) {
    let mut paras: Vec<String> = head.to_vec();
    let text = |paras: &[String]| {
        let mut t = paras.join("\n\n");
        t.push_str("\n\n");
        t.push_str(tail);
        t
    };
    let mut raw = draft.render(&text(&paras));
    for _ in 0..64 {
        if raw.len() >= target {
            break;
        }
        paras.push(more());
        let next = draft.render(&text(&paras));
        if next.len() > MAX_SIZE {
            paras.pop();
            break;
        }
        raw = next;
    }
    (raw, text(&paras))
}

/// The header fields of a mail (the rest is random).
struct Head<'a> {
    from: &'a str,
    cc: Option<&'a str>,
    subject: &'a str,
    message_id: &'a str,
    date: &'a str,
    /// The sender's domain, for the Received line.
    domain: &'a str,
    /// For a reply: the Message-ID it answers.
    thread: Option<&'a str>,
}

fn headers(head: Head<'_>, rng: &mut Rng) -> String {
    let Head {
        from,
        cc,
        subject,
        message_id,
        date,
        domain,
        thread,
    } = head;
    let to = format!("Support <{SUPPORT_ADDRESS}>");
    let mut h = String::with_capacity(1024);
    let ip = format!(
        "{}.{}.{}.{}",
        rng.range(80, 213),
        rng.below(256),
        rng.below(256),
        rng.range(1, 254)
    );
    let _ = write!(
        h,
        "Return-Path: <{from_addr}>\nReceived: from mail.{domain} (mail.{domain} [{ip}])\n\tby mx.example.com (Postfix) with ESMTPS id {qid:X}\n\tfor <{SUPPORT_ADDRESS}>; {date}\n",
        from_addr = from
            .rsplit_once('<')
            .map(|(_, a)| a.trim_end_matches('>'))
            .unwrap_or(from),
        qid = rng.next_u64() >> 24,
    );
    let _ = write!(
        h,
        "Message-ID: <{message_id}>\nDate: {date}\nFrom: {from}\nTo: {to}\n"
    );
    if let Some(cc) = cc {
        let _ = writeln!(h, "Cc: {cc}");
    }
    if let Some(t) = thread {
        let _ = write!(h, "In-Reply-To: <{t}>\nReferences: <{t}>\n");
    }
    let _ = write!(
        h,
        "Subject: {subject}\nMIME-Version: 1.0\n{}\n",
        rng.pick(&[
            "User-Agent: Mozilla Thunderbird",
            "X-Mailer: Microsoft Outlook 16.0",
            "X-Mailer: Apple Mail (2.3774.500.171)",
            "Content-Language: de-DE",
            "X-Originating-IP: [10.0.0.12]",
        ])
    );
    h
}

fn shape_for(rng: &mut Rng) -> Shape {
    match rng.below(3) {
        0 => Shape::Plain,
        1 => Shape::Alternative,
        _ => Shape::Mixed,
    }
}

/// What a new mail leaves for its replies.
#[derive(Debug, Clone)]
struct Original {
    person: Person,
    subject: String,
    body: String,
    date: String,
}

fn new_mail(rng: &mut Rng, index: usize, unix: i64) -> (Mail, Original) {
    let p = Person::new(rng, index);
    let topic = pick_topic(rng);
    let (subjects, openings, greeting, filler) = if p.german {
        (
            topic_texts(DE_SUBJECTS, topic),
            topic_texts(DE_OPENING, topic),
            rng.pick(DE_GREETING),
            DE_FILLER,
        )
    } else {
        (
            topic_texts(EN_SUBJECTS, topic),
            topic_texts(EN_OPENING, topic),
            rng.pick(EN_GREETING),
            EN_FILLER,
        )
    };
    let mut subject = fill(rng.pick(subjects), &p, rng);
    if rng.chance(30) {
        subject = format!("{subject} ({})", p.company);
    }
    // Half of the non-ASCII subjects as B, half as Q encoded words.
    let encoded_subject = !subject.is_ascii();
    let subject_header = encode_header(&subject, rng.chance(50));
    let message_id = format!(
        "{:016x}.{}@{}",
        rng.next_u64(),
        index + 1,
        p.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("x")
    );
    let date = rfc5322_date(unix);
    let cc = rng.chance(20).then(|| {
        format!(
            "{}.kollege@{}",
            ascii_slug(rng.pick(if p.german { DE_FIRST } else { EN_FIRST })),
            p.domain
        )
    });
    let shape = shape_for(rng);
    let draft = Draft {
        headers: headers(
            Head {
                from: &mailbox(&p.name(), &p.address),
                cc: cc.as_deref(),
                subject: &subject_header,
                message_id: &message_id,
                date: &date,
                domain: &p.domain,
                thread: None,
            },
            rng,
        ),
        shape,
        qp: rng.chance(50),
        boundary: format!("----=_Part_{}_{:x}", index, rng.next_u64()),
        attachment: (shape == Shape::Mixed).then(|| make_attachment(rng, &p)),
    };
    let mut head = vec![greeting.to_string(), fill(rng.pick(openings), &p, rng)];
    if matches!(topic, Topic::Outage | Topic::Degraded | Topic::Malfunction) && rng.chance(50) {
        let mut log = String::from(if p.german {
            "Auszug aus dem Protokoll:"
        } else {
            "Excerpt from the log:"
        });
        for _ in 0..rng.range(2, 5) {
            log.push('\n');
            log.push_str(&fill(rng.pick(LOG_LINES), &p, rng));
        }
        head.push(log);
    }
    let tail = p.signature(rng);
    let target = rng.range(MIN_SIZE + 64, MAX_SIZE - 256);
    let mut frng = Rng::new(rng.next_u64());
    let (raw, body) = grow(&draft, &head, &tail, target, || {
        fill(frng.pick(filler), &p, &mut frng)
    });
    (
        Mail {
            raw,
            message_id,
            reply_to: None,
            shape,
            german: p.german,
            encoded_subject,
        },
        Original {
            person: p,
            subject,
            body,
            date,
        },
    )
}

fn reply_mail(
    rng: &mut Rng,
    index: usize,
    unix: i64,
    original_index: usize,
    original: &Original,
    original_id: &str,
) -> Mail {
    let p = &original.person;
    // Mostly the customer; sometimes a colleague from the same company. A
    // reply found only by the customer's Message-ID is taken from the
    // requester's domain, not from a stranger (the first name is drawn all
    // the same, so the rest of the workload stays as it was).
    let (name, address) = if rng.chance(85) {
        (p.name(), p.address.clone())
    } else {
        let first = if p.german {
            rng.pick(DE_FIRST)
        } else {
            rng.pick(EN_FIRST)
        };
        if FREEMAIL.contains(&p.domain.as_str()) {
            (p.name(), p.address.clone())
        } else {
            (
                format!("{first} {}", p.last),
                format!("{}.team@{}", ascii_slug(first), p.domain),
            )
        }
    };
    let subject = format!("Re: {}", original.subject);
    let encoded_subject = !subject.is_ascii();
    let subject_header = encode_header(&subject, rng.chance(50));
    let message_id = format!(
        "{:016x}.r{}@{}",
        rng.next_u64(),
        index + 1,
        address.rsplit_once('@').map(|(_, d)| d).unwrap_or("x")
    );
    let date = rfc5322_date(unix);
    let shape = if rng.chance(70) {
        Shape::Plain
    } else {
        Shape::Alternative
    };
    let draft = Draft {
        headers: headers(
            Head {
                from: &mailbox(&name, &address),
                cc: None,
                subject: &subject_header,
                message_id: &message_id,
                date: &date,
                domain: &p.domain,
                thread: Some(original_id),
            },
            rng,
        ),
        shape,
        qp: rng.chance(50),
        boundary: format!("----=_Part_{}_{:x}", index, rng.next_u64()),
        attachment: None,
    };
    let (greeting, text, filler) = if p.german {
        (rng.pick(DE_GREETING), rng.pick(DE_REPLY), DE_FILLER)
    } else {
        (rng.pick(EN_GREETING), rng.pick(EN_REPLY), EN_FILLER)
    };
    let head = vec![greeting.to_string(), fill(text, p, rng)];
    let sig = p.signature(rng);
    let quote_intro = if p.german {
        format!("Am {} schrieb {} <{}>:", original.date, p.name(), p.address)
    } else {
        format!("On {}, {} <{}> wrote:", original.date, p.name(), p.address)
    };
    let quoted: String = original
        .body
        .lines()
        .map(|l| {
            if l.is_empty() {
                ">".to_string()
            } else {
                format!("> {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let tail = format!("{sig}\n\n{quote_intro}\n{quoted}");
    let target = rng.range(MIN_SIZE + 64, MAX_SIZE - 256);
    let mut frng = Rng::new(rng.next_u64());
    let (mut raw, _) = grow(&draft, &head, &tail, target, || {
        fill(frng.pick(filler), p, &mut frng)
    });
    if raw.len() > MAX_SIZE {
        // A long original quoted whole: keep only its first lines.
        let short: String = quoted.lines().take(12).collect::<Vec<_>>().join("\n");
        let tail = format!("{sig}\n\n{quote_intro}\n{short}\n> [...]");
        raw = grow(&draft, &head, &tail, target, || {
            fill(frng.pick(filler), p, &mut frng)
        })
        .0;
    }
    Mail {
        raw,
        message_id,
        reply_to: Some(original_index),
        shape,
        german: p.german,
        encoded_subject,
    }
}

/// Generates `new` new mails and `replies` replies with [`DEFAULT_SEED`].
pub fn generate(new: usize, replies: usize) -> Vec<Mail> {
    generate_seeded(new, replies, DEFAULT_SEED)
}

/// Generates the workload: new mails and replies interleaved at a constant
/// ratio, each reply after the new mail it answers (a recent one more often
/// than an old one, as in a real desk).
pub fn generate_seeded(new: usize, replies: usize, seed: u64) -> Vec<Mail> {
    assert!(
        new > 0 || replies == 0,
        "replies need at least one new mail"
    );
    let mut rng = Rng::new(seed);
    let mut mails: Vec<Mail> = Vec::with_capacity(new + replies);
    // (workload index, what replies need) of every new mail so far.
    let mut originals: Vec<(usize, Original)> = Vec::with_capacity(new);
    let start = 1_741_000_000i64; // Mon, 03 Mar 2025
    let (mut n_new, mut n_rep) = (0usize, 0usize);
    while n_new < new || n_rep < replies {
        let index = mails.len();
        let unix = start + index as i64 * 29;
        // Keep replies/new at the final ratio all along the workload.
        let reply_now =
            n_rep < replies && n_new > 0 && (n_new >= new || n_rep * new < replies * n_new);
        if reply_now {
            let k = originals.len();
            let pick = if rng.chance(70) {
                k - 1 - rng.below(k.min(50))
            } else {
                rng.below(k)
            };
            let (orig_index, orig) = &originals[pick];
            let orig_id = mails[*orig_index].message_id.clone();
            let m = reply_mail(&mut rng, index, unix, *orig_index, orig, &orig_id);
            mails.push(m);
            n_rep += 1;
        } else {
            let (m, o) = new_mail(&mut rng, index, unix);
            mails.push(m);
            originals.push((index, o));
            n_new += 1;
        }
    }
    mails
}

/// Writes the mails as `0000001.eml`, … and [`MANIFEST`]: one line per mail,
/// `file<TAB>new|reply<TAB>message-id<TAB>original message-id (replies)`.
pub fn write_dir(dir: &Path, mails: &[Mail]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut manifest = std::io::BufWriter::new(std::fs::File::create(dir.join(MANIFEST))?);
    for (i, m) in mails.iter().enumerate() {
        let name = file_name(i);
        std::fs::write(dir.join(&name), &m.raw)?;
        match m.reply_to {
            Some(o) => writeln!(
                manifest,
                "{name}\treply\t{}\t{}",
                m.message_id, mails[o].message_id
            )?,
            None => writeln!(manifest, "{name}\tnew\t{}\t", m.message_id)?,
        }
    }
    manifest.flush()
}

/// One line of the manifest.
#[derive(Debug, Clone)]
pub struct Entry {
    /// File name inside the workload directory.
    pub file: String,
    /// Message-ID of the mail.
    pub message_id: String,
    /// For a reply: the Message-ID of the new mail it answers.
    pub original: Option<String>,
}

/// Reads [`MANIFEST`] from a workload directory.
pub fn read_manifest(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(dir.join(MANIFEST))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 4 || !(f[1] == "new" || f[1] == "reply") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{MANIFEST}:{}: malformed line", n + 1),
            ));
        }
        out.push(Entry {
            file: f[0].to_string(),
            message_id: f[2].to_string(),
            original: (f[1] == "reply").then(|| f[3].to_string()),
        });
    }
    Ok(out)
}

/// Checks `ticketd ingest` results against the manifest: every new mail
/// `created` (with its own ticket), every reply `appended` to the ticket of
/// the mail it answers. `outcomes` are the JSON lines' (action, ticket,
/// message_id). Returns a list of problems (empty: all is well).
pub fn verify(
    entries: &[Entry],
    outcomes: &[(String, Option<String>, Option<String>)],
) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let mut problems = Vec::new();
    let mut by_id: HashMap<&str, (&str, Option<&str>)> = HashMap::new();
    for (action, ticket, mid) in outcomes {
        match mid {
            Some(mid) => {
                if by_id
                    .insert(mid.as_str(), (action.as_str(), ticket.as_deref()))
                    .is_some()
                {
                    problems.push(format!("{mid}: reported twice"));
                }
            }
            None => problems.push(format!("a result without message_id ({action})")),
        }
    }
    let mut tickets = HashSet::new();
    for e in entries {
        let Some(&(action, ticket)) = by_id.get(e.message_id.as_str()) else {
            problems.push(format!("{}: no result", e.file));
            continue;
        };
        match &e.original {
            None => {
                if action != "created" {
                    problems.push(format!("{}: new mail was {action}, not created", e.file));
                } else if let Some(t) = ticket {
                    if !tickets.insert(t) {
                        problems.push(format!("{}: ticket {t} created twice", e.file));
                    }
                }
            }
            Some(orig) => {
                let want = by_id.get(orig.as_str()).and_then(|(_, t)| *t);
                if action != "appended" {
                    problems.push(format!("{}: reply was {action}, not appended", e.file));
                } else if want.is_none() || ticket != want {
                    problems.push(format!(
                        "{}: reply landed on ticket {:?}, its original is on {:?}",
                        e.file, ticket, want
                    ));
                }
            }
        }
        if problems.len() > 20 {
            problems.push("… (more problems not shown)".into());
            break;
        }
    }
    problems
}

/// Parses one `ticketd ingest` JSON line into (action, ticket, message_id).
pub fn parse_outcome(line: &str) -> Option<(String, Option<String>, Option<String>)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Some((s("action")?, s("ticket"), s("message_id")))
}
