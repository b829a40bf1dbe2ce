//! Staff commands typed in chat — `!t reply Wir sind dran` in a ticket's
//! thread, `!t list breaching` in the channel — or given as a slash
//! command's options, read into a [`Command`]. Pure: text in, command or
//! a short usage message out; nothing a member types can make it panic.
//!
//! A command that concerns one ticket takes the ticket of the thread it is
//! typed in, or a number given first: in the channel `status 10001
//! resolved` or `#10001`; in a thread only `#10001` names another ticket,
//! so that `reply 42 Geräte sind betroffen` or `severity 1` mean what they
//! say. In the channel without a number it asks which ticket.

use crate::domain::{Severity, Status, TicketNumber};
use std::fmt;

/// What a staff member asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Show a ticket.
    Show(TicketNumber),
    /// List tickets.
    List(ListFilter),
    /// Take a ticket oneself.
    Claim(TicketNumber),
    /// Give a ticket to someone (a mention `<@123>` or a name).
    Assign(TicketNumber, String),
    /// Set the severity.
    Severity(TicketNumber, Severity),
    /// Set the status.
    Status(TicketNumber, Status),
    /// Add an internal note.
    Note(TicketNumber, String),
    /// Mail a reply to the requester.
    Reply(TicketNumber, String),
    /// Open a ticket from chat (e.g. after a phone call).
    New(NewTicket),
    /// The list of commands.
    Help,
}

/// Which tickets `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFilter {
    /// Every open ticket (new, open, pending).
    Open,
    /// Open tickets claimed by or assigned to the one asking.
    Mine,
    /// Open tickets whose SLA is breached or due within a day.
    Breaching,
}

/// A ticket opened from chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTicket {
    /// The customer: a mail address, or an organisation's directory id.
    pub customer: String,
    /// Its severity.
    pub severity: Severity,
    /// Subject.
    pub subject: String,
    /// What was said (the lines after the first), possibly empty.
    pub text: String,
}

/// Why a text is not a command; its `Display` is the short answer the
/// member gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Nothing after the prefix.
    Empty,
    /// No such command.
    Unknown(String),
    /// The command's arguments do not fit.
    Usage {
        /// The command.
        command: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A ticket command outside a ticket's thread without a number.
    NoTicket(&'static str),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Empty => write!(f, "which command? try `help`"),
            CommandError::Unknown(c) => {
                write!(f, "unknown command {c:?}; the commands: {}", NAMES.join(", "))
            }
            CommandError::Usage { command, problem } => {
                write!(f, "{problem}. Usage: {}", usage(command))
            }
            CommandError::NoTicket(c) => write!(
                f,
                "which ticket? use `{c}` in the ticket's thread or give its number first. Usage: {}",
                usage(c)
            ),
        }
    }
}

impl std::error::Error for CommandError {}

/// The command names, in the order `help` lists them.
pub const NAMES: [&str; 10] = [
    "show", "list", "claim", "assign", "severity", "status", "note", "reply", "new", "help",
];

/// How a command is written.
pub fn usage(command: &str) -> &'static str {
    match command {
        "show" => "show [NUMBER]",
        "list" => "list [open|mine|breaching]",
        "claim" => "claim [NUMBER]",
        "assign" => "assign [NUMBER] @MEMBER",
        "severity" => "severity [NUMBER] 1-4",
        "status" => "status [NUMBER] open|pending|resolved|closed",
        "note" => "note [NUMBER] TEXT",
        "reply" => "reply [NUMBER] TEXT",
        "new" => "new CUSTOMER SEVERITY SUBJECT (further lines: the text)",
        _ => "help",
    }
}

/// Where a command was typed: the ticket of the thread, if any, and how
/// the desk's ticket numbers look.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The ticket whose thread this is.
    pub thread_ticket: Option<&'a TicketNumber>,
    /// The desk's ticket number prefix (`[tickets] number_prefix`).
    pub number_prefix: &'a str,
}

impl Context<'_> {
    /// Whether `word` names a ticket of this desk (prefix, then digits;
    /// the prefix may be left out). In a thread only `#NUMBER` does.
    fn number(&self, word: &str) -> Option<TicketNumber> {
        if self.thread_ticket.is_some() && !word.starts_with('#') {
            return None;
        }
        let w = word.strip_prefix('#').unwrap_or(word);
        let digits = w
            .strip_prefix(self.number_prefix)
            .filter(|_| !self.number_prefix.is_empty())
            .unwrap_or(w);
        (!digits.is_empty() && digits.len() <= 18 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| TicketNumber(format!("{}{digits}", self.number_prefix)))
    }
}

/// Reads a command typed after the prefix (`!t ` already removed).
pub fn parse(text: &str, ctx: &Context<'_>) -> Result<Command, CommandError> {
    let text = text.trim();
    let (first_line, rest_lines) = match text.split_once('\n') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (text, ""),
    };
    let (name, args) = match first_line.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (first_line, ""),
    };
    if name.is_empty() {
        return Err(CommandError::Empty);
    }
    let lower = name.to_lowercase();
    let Some(&command) = NAMES.iter().find(|n| **n == lower) else {
        return Err(CommandError::Unknown(name.chars().take(40).collect()));
    };
    let usage_err = |problem: String| CommandError::Usage { command, problem };
    // The ticket: a leading number, else the thread's.
    let ticket = |args: &str| -> Result<(TicketNumber, String), CommandError> {
        let (first, after) = match args.split_once(char::is_whitespace) {
            Some((f, a)) => (f, a.trim()),
            None => (args, ""),
        };
        // A number alone is the ticket only where nothing else is needed
        // (`severity 1` in the channel asks which ticket).
        if let Some(n) = ctx.number(first).filter(|_| {
            !after.is_empty()
                || matches!(command, "show" | "claim")
                || (matches!(command, "note" | "reply") && !rest_lines.is_empty())
        }) {
            return Ok((n, after.to_string()));
        }
        match ctx.thread_ticket {
            Some(n) => Ok((n.clone(), args.to_string())),
            None => Err(CommandError::NoTicket(command)),
        }
    };
    // Free text: the rest of the first line and every further line.
    let joined = |first: String| -> String {
        match (first.is_empty(), rest_lines.is_empty()) {
            (_, true) => first,
            (true, false) => rest_lines.to_string(),
            (false, false) => format!("{first}\n{rest_lines}"),
        }
    };
    match command {
        "help" => Ok(Command::Help),
        "show" | "claim" => {
            let (n, extra) = ticket(args)?;
            if !extra.is_empty() {
                return Err(usage_err(format!("unexpected {extra:?}")));
            }
            Ok(if command == "show" {
                Command::Show(n)
            } else {
                Command::Claim(n)
            })
        }
        "list" => match args.to_lowercase().as_str() {
            "" | "open" => Ok(Command::List(ListFilter::Open)),
            "mine" => Ok(Command::List(ListFilter::Mine)),
            "breaching" | "breached" => Ok(Command::List(ListFilter::Breaching)),
            other => Err(usage_err(format!("no list {other:?}"))),
        },
        "assign" => {
            let (n, who) = ticket(args)?;
            let who = who.trim();
            if who.is_empty() {
                return Err(usage_err("whom?".into()));
            }
            if who.split_whitespace().count() > 1 && !who.starts_with("<@") {
                return Err(usage_err(format!("one member, not {who:?}")));
            }
            Ok(Command::Assign(n, who.to_string()))
        }
        "severity" => {
            let (n, level) = ticket(args)?;
            let sev = level
                .trim()
                .parse::<u8>()
                .ok()
                .and_then(|v| Severity::try_from(v).ok())
                .ok_or_else(|| {
                    usage_err(if level.trim().is_empty() {
                        "which severity?".into()
                    } else {
                        format!("severity must be 1–4, not {:?}", level.trim())
                    })
                })?;
            Ok(Command::Severity(n, sev))
        }
        "status" => {
            let (n, word) = ticket(args)?;
            let status = match word.trim().to_lowercase().as_str() {
                "open" | "reopen" => Status::Open,
                "pending" | "waiting" => Status::Pending,
                "resolved" | "resolve" | "solved" => Status::Resolved,
                "closed" | "close" => Status::Closed,
                "" => return Err(usage_err("which status?".into())),
                other => return Err(usage_err(format!("no status {other:?}"))),
            };
            Ok(Command::Status(n, status))
        }
        "note" | "reply" => {
            let (n, first) = ticket(args)?;
            let text = joined(first);
            if text.trim().is_empty() {
                return Err(usage_err(format!("the {command} is empty")));
            }
            Ok(if command == "note" {
                Command::Note(n, text)
            } else {
                Command::Reply(n, text)
            })
        }
        "new" => {
            let mut words = args.splitn(3, char::is_whitespace);
            let customer = words.next().unwrap_or("").trim();
            let level = words.next().unwrap_or("").trim();
            let subject = words.next().unwrap_or("").trim();
            if customer.is_empty() {
                return Err(usage_err("for which customer?".into()));
            }
            let severity = level
                .parse::<u8>()
                .ok()
                .and_then(|v| Severity::try_from(v).ok())
                .ok_or_else(|| usage_err(format!("severity must be 1–4, not {level:?}")))?;
            if subject.is_empty() {
                return Err(usage_err("the subject is missing".into()));
            }
            Ok(Command::New(NewTicket {
                customer: customer.to_string(),
                severity,
                subject: subject.to_string(),
                text: rest_lines.to_string(),
            }))
        }
        _ => Err(CommandError::Unknown(name.to_string())),
    }
}

/// Reads a slash command: its name and options (`number`, `severity`,
/// `status`, `text`, `filter`, `member`, `customer`, `subject`) as the chat
/// adapter received them. The same rules as typed commands apply.
pub fn from_slash(
    name: &str,
    options: &[(&str, &str)],
    ctx: &Context<'_>,
) -> Result<Command, CommandError> {
    let opt = |k: &str| {
        options
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let mut text = name.trim().to_string();
    if name.trim() == "new" {
        for k in ["customer", "severity", "subject"] {
            text.push(' ');
            text.push_str(opt(k).unwrap_or(""));
        }
        if let Some(t) = opt("text") {
            text.push('\n');
            text.push_str(t);
        }
        return parse(&text, ctx);
    }
    if let Some(n) = opt("number") {
        // A number given as an option always names a ticket.
        text.push_str(" #");
        text.push_str(n.trim_start_matches('#'));
    }
    for k in ["filter", "member", "severity", "status", "text"] {
        if let Some(v) = opt(k) {
            text.push(' ');
            text.push_str(v);
        }
    }
    parse(&text, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> TicketNumber {
        TicketNumber(s.to_string())
    }

    fn in_thread(text: &str) -> Result<Command, CommandError> {
        let t = n("10001");
        parse(
            text,
            &Context {
                thread_ticket: Some(&t),
                number_prefix: "",
            },
        )
    }

    fn in_channel(text: &str) -> Result<Command, CommandError> {
        parse(
            text,
            &Context {
                thread_ticket: None,
                number_prefix: "",
            },
        )
    }

    #[test]
    fn every_command_in_a_thread() {
        assert_eq!(in_thread("show"), Ok(Command::Show(n("10001"))));
        assert_eq!(in_thread("list"), Ok(Command::List(ListFilter::Open)));
        assert_eq!(in_thread("list mine"), Ok(Command::List(ListFilter::Mine)));
        assert_eq!(
            in_thread("LIST Breaching"),
            Ok(Command::List(ListFilter::Breaching))
        );
        assert_eq!(in_thread("claim"), Ok(Command::Claim(n("10001"))));
        assert_eq!(
            in_thread("assign <@4711>"),
            Ok(Command::Assign(n("10001"), "<@4711>".into()))
        );
        assert_eq!(
            in_thread("severity 1"),
            Ok(Command::Severity(n("10001"), Severity::Critical))
        );
        assert_eq!(
            in_thread("status pending"),
            Ok(Command::Status(n("10001"), Status::Pending))
        );
        assert_eq!(
            in_thread("status resolved"),
            Ok(Command::Status(n("10001"), Status::Resolved))
        );
        assert_eq!(
            in_thread("note rief an, Rückruf morgen"),
            Ok(Command::Note(n("10001"), "rief an, Rückruf morgen".into()))
        );
        assert_eq!(
            in_thread("reply Guten Tag,\nwir sind dran.\n\nGruß"),
            Ok(Command::Reply(
                n("10001"),
                "Guten Tag,\nwir sind dran.\n\nGruß".into()
            ))
        );
        assert_eq!(
            in_thread("reply\nNur auf der zweiten Zeile"),
            Ok(Command::Reply(
                n("10001"),
                "Nur auf der zweiten Zeile".into()
            ))
        );
        assert_eq!(in_thread("help"), Ok(Command::Help));
    }

    #[test]
    fn a_number_names_another_ticket_and_is_needed_in_the_channel() {
        assert_eq!(
            in_thread("status #10002 closed"),
            Ok(Command::Status(n("10002"), Status::Closed))
        );
        // In a thread a bare number is text.
        assert_eq!(
            in_thread("reply 42 Geräte sind betroffen"),
            Ok(Command::Reply(
                n("10001"),
                "42 Geräte sind betroffen".into()
            ))
        );
        assert_eq!(
            in_channel("reply 10002\nDer Text steht darunter."),
            Ok(Command::Reply(
                n("10002"),
                "Der Text steht darunter.".into()
            ))
        );
        assert_eq!(
            in_channel("severity 10002 2"),
            Ok(Command::Severity(n("10002"), Severity::Production))
        );
        assert_eq!(
            in_channel("severity 1"),
            Err(CommandError::NoTicket("severity"))
        );
        assert_eq!(in_channel("show 10002"), Ok(Command::Show(n("10002"))));
        assert_eq!(in_channel("show #10002"), Ok(Command::Show(n("10002"))));
        let e = in_channel("reply Hallo").unwrap_err();
        assert_eq!(e, CommandError::NoTicket("reply"));
        assert!(e.to_string().contains("reply [NUMBER] TEXT"), "{e}");
        let sd = parse(
            "show SD-42",
            &Context {
                thread_ticket: None,
                number_prefix: "SD-",
            },
        );
        assert_eq!(sd, Ok(Command::Show(n("SD-42"))));
        let bare = parse(
            "show 42",
            &Context {
                thread_ticket: None,
                number_prefix: "SD-",
            },
        );
        assert_eq!(bare, Ok(Command::Show(n("SD-42"))));
    }

    #[test]
    fn new_opens_a_ticket_for_a_customer() {
        assert_eq!(
            in_channel("new anna@kunde.de 2 Telefon: ERP langsam\nAnruf 10:14, seit heute früh."),
            Ok(Command::New(NewTicket {
                customer: "anna@kunde.de".into(),
                severity: Severity::Production,
                subject: "Telefon: ERP langsam".into(),
                text: "Anruf 10:14, seit heute früh.".into(),
            }))
        );
        assert!(in_channel("new kunde")
            .unwrap_err()
            .to_string()
            .contains("severity must be 1–4"));
        assert!(in_channel("new kunde 3")
            .unwrap_err()
            .to_string()
            .contains("subject is missing"));
        assert!(in_channel("new")
            .unwrap_err()
            .to_string()
            .contains("which customer"));
    }

    #[test]
    fn malformed_input_gets_a_usage_message() {
        let cases = [
            ("", "which command"),
            ("   ", "which command"),
            ("frobnicate 1", "unknown command \"frobnicate\""),
            ("severity 9", "severity must be 1–4, not \"9\""),
            ("severity", "which severity"),
            ("severity high", "severity must be 1–4"),
            ("status sleeping", "no status \"sleeping\""),
            ("status", "which status"),
            ("note", "the note is empty"),
            ("reply   ", "the reply is empty"),
            ("list everything", "no list \"everything\""),
            ("assign", "whom?"),
            ("assign anna bert", "one member"),
            ("show extra words", "unexpected"),
        ];
        for (text, want) in cases {
            let e = in_thread(text).expect_err(text);
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
        // The usage is part of the answer.
        assert!(in_thread("severity 0")
            .unwrap_err()
            .to_string()
            .ends_with("Usage: severity [NUMBER] 1-4"));
    }

    #[test]
    fn slash_commands_read_like_typed_ones() {
        let t = n("10001");
        let ctx = Context {
            thread_ticket: Some(&t),
            number_prefix: "",
        };
        assert_eq!(
            from_slash("status", &[("status", "resolved")], &ctx),
            Ok(Command::Status(n("10001"), Status::Resolved))
        );
        assert_eq!(
            from_slash("severity", &[("number", "10005"), ("severity", "2")], &ctx),
            Ok(Command::Severity(n("10005"), Severity::Production))
        );
        assert_eq!(
            from_slash("reply", &[("text", "Erledigt.\nGruß")], &ctx),
            Ok(Command::Reply(n("10001"), "Erledigt.\nGruß".into()))
        );
        assert_eq!(
            from_slash(
                "new",
                &[
                    ("customer", "kunde"),
                    ("severity", "1"),
                    ("subject", "Alles steht"),
                    ("text", "Anruf")
                ],
                &ctx
            ),
            Ok(Command::New(NewTicket {
                customer: "kunde".into(),
                severity: Severity::Critical,
                subject: "Alles steht".into(),
                text: "Anruf".into(),
            }))
        );
        assert!(from_slash("severity", &[], &ctx).is_err());
    }

    proptest::proptest! {
        #[test]
        fn nothing_typed_makes_it_panic(text in "\\PC{0,200}") {
            let _ = in_thread(&text);
            let _ = in_channel(&text);
            for name in NAMES {
                let _ = in_channel(&format!("{name} {text}"));
                let _ = in_thread(&format!("{name} {text}"));
            }
        }
    }
}
