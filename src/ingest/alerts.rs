//! Monitoring notifications: recognise the default alert mails of Nagios,
//! Icinga 1, Icinga 2, Checkmk, Zabbix, PRTG and Monit (plus configured
//! generic rules) and turn them into an [`Alert`].
//!
//! Pure: a function of the parsed mail and the rules. Recognition needs the
//! structure of a system's default template (its banner, its subject form or
//! its field set), never a single word, so that a person's mail does not
//! become an alert. Replies, forwards, bounces and auto-replies are never
//! alerts, even when they quote one.
//!
//! Where the body and the subject disagree the body wins: Nagios and Icinga
//! can send a recovery under the problem's subject, and only `State: OK` in
//! the body tells.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use super::parse::ParsedMail;

/// Which monitoring system sent it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AlertSource {
    /// Nagios (notify-host-by-email / notify-service-by-email).
    Nagios,
    /// Icinga 1, and Icinga 2 before 2.8 (the "***** Icinga *****" mail).
    Icinga,
    /// Icinga 2 mail-host-notification.sh / mail-service-notification.sh.
    Icinga2,
    /// Checkmk mail notification: the HTML mail (its text part) or the ASCII mail.
    Checkmk,
    /// Zabbix default message templates.
    Zabbix,
    /// PRTG default e-mail notification.
    Prtg,
    /// Monit default alert mail.
    Monit,
    /// A generic rule from the configuration, by its name.
    Generic(String),
}

/// Normalised state of the host or service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    /// Service OK.
    Ok,
    /// Host up.
    Up,
    /// Service warning.
    Warning,
    /// Service critical.
    Critical,
    /// State unknown (or not given).
    Unknown,
    /// Host down.
    Down,
    /// Host unreachable.
    Unreachable,
}

impl AlertState {
    /// True for the good states (OK, UP): the incident is over.
    pub fn is_recovery(self) -> bool {
        matches!(self, AlertState::Ok | AlertState::Up)
    }

    /// True for every state that is not a recovery.
    pub fn is_problem(self) -> bool {
        !self.is_recovery()
    }

    /// Reads a state word as the systems write it (`WARNING`, `WARN`, `crit`,
    /// `UNREACH`, …); None for anything else.
    pub fn from_word(word: &str) -> Option<AlertState> {
        let w = word
            .trim()
            .trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_ascii_uppercase();
        Some(match w.as_str() {
            "OK" | "RECOVERED" | "RESOLVED" => AlertState::Ok,
            "UP" => AlertState::Up,
            "WARNING" | "WARN" => AlertState::Warning,
            "CRITICAL" | "CRIT" => AlertState::Critical,
            "UNKNOWN" | "UNKN" => AlertState::Unknown,
            "DOWN" => AlertState::Down,
            "UNREACHABLE" | "UNREACH" => AlertState::Unreachable,
            _ => return None,
        })
    }
}

/// What the notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A problem (new or repeated).
    Problem,
    /// The problem is over.
    Recovery,
    /// Someone acknowledged the problem.
    Acknowledgement,
    /// Flapping, downtime, custom and other informational notifications.
    Other,
}

/// A recognised monitoring notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Which system sent it.
    pub source: AlertSource,
    /// The host (as the system names it).
    pub host: String,
    /// The service; None for host alerts.
    pub service: Option<String>,
    /// The state the notification reports.
    pub state: AlertState,
    /// Problem, recovery, acknowledgement or other.
    pub kind: AlertKind,
    /// The system's own event id, when the mail carries one (Zabbix).
    pub event_id: Option<String>,
    /// One line: the plugin output / problem text.
    pub summary: String,
}

impl Alert {
    /// The incident key: source-independent `host\u{1f}service`, lower-cased,
    /// so that every notification of one incident finds the same ticket.
    pub fn key(&self) -> String {
        format!(
            "{}\u{1f}{}",
            self.host.trim().to_lowercase(),
            self.service.as_deref().unwrap_or("").trim().to_lowercase()
        )
    }
}

/// Characters of the summary kept.
const MAX_SUMMARY_CHARS: usize = 500;

/// Bytes of the body read: every default template fits many times over, and
/// a large mail must not make every message pay for a scan of all of it.
const MAX_BODY_BYTES: usize = 32 * 1024;

/// A generic alert parser as written in the configuration (TOML).
///
/// All patterns are regular expressions (the `regex` crate's syntax).
/// `host`, `service` and `state` are searched in the subject, then in the
/// body; they must have the named groups `host`, `service` and `state`.
/// A state that is a recovery (OK, UP) makes the alert a recovery. At least
/// one of `from` and `subject` is required.
///
/// ```toml
/// name = "acme"
/// from = '^alerts@acme\.example$'
/// subject = '^ACME '
/// host = 'host=(?P<host>\S+)'
/// service = 'check=(?P<service>[^;]+)'
/// state = 'state=(?P<state>\w+)'
/// [states]
/// bad = "critical"
/// good = "ok"
/// ```
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GenericAlertConfig {
    /// The rule's name; it becomes [`AlertSource::Generic`].
    pub name: String,
    /// Must match the From address first, when given.
    #[serde(default)]
    pub from: Option<String>,
    /// Must match the subject first, when given.
    #[serde(default)]
    pub subject: Option<String>,
    /// Pattern with a `(?P<host>…)` group.
    pub host: String,
    /// Pattern with a `(?P<service>…)` group; without it every alert is a host alert.
    #[serde(default)]
    pub service: Option<String>,
    /// Pattern with a `(?P<state>…)` group.
    pub state: String,
    /// The system's own state words mapped to normalised ones (`"ok"`, `"up"`,
    /// `"warning"`, `"critical"`, `"unknown"`, `"down"`, `"unreachable"`);
    /// words not listed are read as the usual state words.
    #[serde(default)]
    pub states: BTreeMap<String, String>,
}

/// A compiled [`GenericAlertConfig`].
#[derive(Debug, Clone)]
pub struct GenericAlertRule {
    name: String,
    from: Option<Regex>,
    subject: Option<Regex>,
    host: Regex,
    service: Option<Regex>,
    state: Regex,
    states: Vec<(String, AlertState)>,
}

fn compile_pattern(
    rule: &str,
    field: &str,
    pattern: &str,
    group: Option<&str>,
) -> Result<Regex, String> {
    let re = Regex::new(pattern).map_err(|e| format!("alert rule {rule:?}: {field}: {e}"))?;
    if let Some(g) = group {
        if !re.capture_names().flatten().any(|n| n == g) {
            return Err(format!(
                "alert rule {rule:?}: {field} needs a named group (?P<{g}>…)"
            ));
        }
    }
    Ok(re)
}

impl GenericAlertRule {
    /// Compiles and validates a configured rule; the error says which rule and
    /// which field is wrong. `name` (e.g. the key of the rule's TOML table)
    /// names the rule; when it is empty, `cfg.name` does.
    pub fn compile(name: &str, cfg: &GenericAlertConfig) -> Result<GenericAlertRule, String> {
        let name = if name.trim().is_empty() {
            cfg.name.trim()
        } else {
            name.trim()
        };
        if name.is_empty() {
            return Err("alert rule without a name".into());
        }
        // Without a sender or subject to anchor it, a rule would read any
        // person's "host=… state=…" as an alert.
        if cfg.from.is_none() && cfg.subject.is_none() {
            return Err(format!(
                "alert rule {name:?}: needs `from` or `subject`, so that people's mail is never read as an alert"
            ));
        }
        let from = cfg
            .from
            .as_deref()
            .map(|p| compile_pattern(name, "from", p, None))
            .transpose()?;
        let subject = cfg
            .subject
            .as_deref()
            .map(|p| compile_pattern(name, "subject", p, None))
            .transpose()?;
        let host = compile_pattern(name, "host", &cfg.host, Some("host"))?;
        let service = cfg
            .service
            .as_deref()
            .map(|p| compile_pattern(name, "service", p, Some("service")))
            .transpose()?;
        let state = compile_pattern(name, "state", &cfg.state, Some("state"))?;
        let mut states = Vec::new();
        for (word, target) in &cfg.states {
            let st = AlertState::from_word(target).ok_or_else(|| {
                format!("alert rule {name:?}: states: {target:?} (for {word:?}) is not ok, up, warning, critical, unknown, down or unreachable")
            })?;
            states.push((word.trim().to_lowercase(), st));
        }
        Ok(GenericAlertRule {
            name: name.to_string(),
            from,
            subject,
            host,
            service,
            state,
            states,
        })
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn state_of(&self, word: &str) -> Option<AlertState> {
        let w = word.trim().to_lowercase();
        self.states
            .iter()
            .find(|(k, _)| *k == w)
            .map(|(_, s)| *s)
            .or_else(|| AlertState::from_word(&w))
    }

    fn apply(&self, mail: &ParsedMail, body: &str) -> Option<Alert> {
        if let Some(re) = &self.from {
            let from = mail.from.as_ref().map(|m| m.address.as_str()).unwrap_or("");
            if !re.is_match(from) {
                return None;
            }
        }
        if let Some(re) = &self.subject {
            if !re.is_match(&mail.subject) {
                return None;
            }
        }
        let find = |re: &Regex, group: &str| -> Option<String> {
            [mail.subject.as_str(), body].iter().find_map(|text| {
                re.captures(text)
                    .and_then(|c| c.name(group))
                    .map(|m| m.as_str().trim().to_string())
                    .filter(|s| !s.is_empty())
            })
        };
        let host = find(&self.host, "host")?;
        let service = match &self.service {
            Some(re) => find(re, "service"),
            None => None,
        };
        let state = self.state_of(&find(&self.state, "state")?)?;
        let summary = body
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or(mail.subject.as_str());
        Some(Alert {
            source: AlertSource::Generic(self.name.clone()),
            host,
            service,
            state,
            kind: kind_of(None, state),
            event_id: None,
            summary: one_line(summary),
        })
    }
}

/// Recognises a monitoring notification; None for anything else (a person's
/// mail must never become an alert). The built-in formats are tried first,
/// then the generic rules in order.
pub fn parse_alert(mail: &ParsedMail, generic: &[GenericAlertRule]) -> Option<Alert> {
    if !may_be_alert(mail) {
        return None;
    }
    let body = liberal_body(mail);
    let fields = Fields::new(&body);
    let subject = mail.subject.trim();
    nagios(subject, &body, &fields)
        .or_else(|| icinga2(subject, &body, &fields))
        .or_else(|| checkmk(subject, &fields))
        .or_else(|| zabbix(subject, &body, &fields))
        .or_else(|| prtg(mail, subject, &fields))
        .or_else(|| monit(subject, &body, &fields))
        .or_else(|| generic.iter().find_map(|r| r.apply(mail, &body)))
        .filter(|a| !a.host.is_empty())
}

/// Replies, forwards, bounces and auto-replies quote alerts but are not ones.
fn may_be_alert(mail: &ParsedMail) -> bool {
    static REPLY: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"(?i)^\s*(re|aw|sv|antw|wg|fw|fwd|tr|rif|r)\s*(\[\d+\])?\s*:").ok()
    });
    if mail.bounced.is_some() || mail.report_type.is_some() {
        return false;
    }
    if let Some(v) = mail.header("auto-submitted") {
        if v.trim().to_ascii_lowercase().starts_with("auto-replied") {
            return false;
        }
    }
    match REPLY.as_ref() {
        Some(re) => !re.is_match(&mail.subject),
        None => true,
    }
}

/// The body, with quoted-printable undone when the mail was sent without a
/// Content-Transfer-Encoding header but written in quoted-printable (seen
/// with Icinga 2's scripts piping into `mail`).
fn liberal_body(mail: &ParsedMail) -> String {
    let mut end = mail.body.len().min(MAX_BODY_BYTES);
    while !mail.body.is_char_boundary(end) {
        end -= 1;
    }
    let body = mail.body[..end].replace("\r\n", "\n");
    if mail.header("content-transfer-encoding").is_some() {
        return body;
    }
    let looks_qp = body.contains("=\n")
        || body.ends_with('=')
        || body.contains("=3D")
        || body.contains("=20")
        || body.contains("=09");
    if looks_qp {
        qp_decode(&body)
    } else {
        body
    }
}

fn qp_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' {
            if i + 1 == b.len() {
                i += 1;
                continue;
            }
            if b[i + 1] == b'\n' {
                i += 2;
                continue;
            }
            let hex = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            };
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Key: value` lines of a body (lower-case keys, first occurrence wins).
/// Quoted lines (`>`) are skipped. A key with an empty value takes the next
/// line when that is not a field itself ("Additional Info:\nWARNING - …").
struct Fields {
    items: Vec<(String, String)>,
}

fn split_field(line: &str) -> Option<(String, &str)> {
    let (k, v) = line.split_once(':')?;
    let k = k.trim();
    let mut chars = k.chars();
    let first = chars.next()?;
    if !first.is_alphabetic()
        || k.chars().count() > 30
        || k.contains(" - ")
        || k.split_whitespace().count() > 4
        || !k
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '/' | '_' | '-' | '.'))
    {
        return None;
    }
    let key = k
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    Some((key, v.trim()))
}

/// A two-column table row of an HTML mail as the HTML-to-text conversion
/// draws it (`Sensor│Ping`): PRTG's default mail is such a table.
fn table_cell_field(line: &str) -> Option<(String, &str)> {
    let mut cells = line.trim_matches('│').split('│').map(str::trim);
    let (k, v) = (cells.next()?, cells.next()?);
    if cells.next().is_some() || k.is_empty() {
        return None;
    }
    let (key, _) = split_field(&format!("{k}:"))?;
    Some((key, v))
}

impl Fields {
    fn new(body: &str) -> Fields {
        let lines: Vec<&str> = body.lines().map(|l| l.trim_end_matches('\r')).collect();
        let mut items = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if t.starts_with('>') {
                continue;
            }
            let Some((key, value)) = split_field(t).or_else(|| table_cell_field(t)) else {
                continue;
            };
            let mut value = value.to_string();
            if value.is_empty() {
                if let Some(next) = lines[i + 1..]
                    .iter()
                    .map(|l| l.trim())
                    .find(|l| !l.is_empty())
                {
                    if split_field(next).is_none() && !next.starts_with('>') {
                        value = next.to_string();
                    }
                }
            }
            items.push((key, value));
        }
        Fields { items }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn has(&self, key: &str) -> bool {
        self.items.iter().any(|(k, _)| k == key)
    }
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.char_indices().nth(MAX_SUMMARY_CHARS) {
        Some((i, _)) => s[..i].to_string(),
        None => s,
    }
}

/// The kind from a Nagios-style notification type; for problems and
/// recoveries the state decides (a recovery can come under a PROBLEM type).
fn kind_of(notification_type: Option<&str>, state: AlertState) -> AlertKind {
    let by_state = if state.is_recovery() {
        AlertKind::Recovery
    } else {
        AlertKind::Problem
    };
    let Some(t) = notification_type else {
        return by_state;
    };
    let t = t.trim().to_ascii_uppercase();
    match t.as_str() {
        "" | "PROBLEM" | "RECOVERY" => by_state,
        "ACKNOWLEDGEMENT" | "ACKNOWLEDGMENT" => AlertKind::Acknowledgement,
        _ => AlertKind::Other,
    }
}

fn re(p: &str) -> Option<Regex> {
    Regex::new(p).ok()
}

// ---------------------------------------------------------------- Nagios, Icinga 1

static NAGIOS_BANNER: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"(?mi)^\s*\*{3,}\s*(Nagios|Icinga)\b[^*\n]*\*{3,}\s*$"));
static NAGIOS_SUBJECT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"(?i)^\*\*\s*(?P<type>\w+)\s+(?P<what>Service|Host)\s+Alert:\s*(?P<obj>.+?)\s+is\s+(?P<state>\w+)\s*\*\*$",
    )
});
static ICINGA_SUBJECT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"(?i)^(?P<type>[A-Z]+)\s+-\s+(?P<host>.+?)(?:\s+-\s+(?P<service>.+?))?\s+is\s+(?P<state>\w+)$",
    )
});

/// Nagios' sample commands.cfg and Icinga 1 (and Icinga 2 before 2.8): a
/// `***** Nagios *****` banner and `Notification Type:`, `Service:`,
/// `Host:`, `State:`, `Info:` / `Additional Info:` fields.
fn nagios(subject: &str, body: &str, f: &Fields) -> Option<Alert> {
    let banner = NAGIOS_BANNER.as_ref()?.captures(body)?;
    let source = if banner[1].eq_ignore_ascii_case("nagios") {
        AlertSource::Nagios
    } else {
        AlertSource::Icinga
    };
    if !f.has("notification type") && !f.has("host") {
        return None;
    }
    let subj = NAGIOS_SUBJECT
        .as_ref()
        .and_then(|r| r.captures(subject))
        .map(|c| {
            let obj = c["obj"].to_string();
            let (host, service) = if c["what"].eq_ignore_ascii_case("service") {
                match obj.split_once('/') {
                    Some((h, s)) => (h.to_string(), Some(s.to_string())),
                    None => (obj, None),
                }
            } else {
                (obj, None)
            };
            (c["type"].to_string(), host, service, c["state"].to_string())
        })
        .or_else(|| {
            ICINGA_SUBJECT
                .as_ref()
                .and_then(|r| r.captures(subject))
                .map(|c| {
                    (
                        c["type"].to_string(),
                        c["host"].to_string(),
                        c.name("service").map(|m| m.as_str().to_string()),
                        c["state"].to_string(),
                    )
                })
        });
    let host = f
        .get("host")
        .map(str::to_string)
        .or_else(|| subj.as_ref().map(|s| s.1.clone()))?;
    let service = if f.has("host") {
        f.get("service").map(str::to_string)
    } else {
        subj.as_ref().and_then(|s| s.2.clone())
    };
    let state = f
        .get("state")
        .and_then(AlertState::from_word)
        .or_else(|| subj.as_ref().and_then(|s| AlertState::from_word(&s.3)))?;
    let ntype = f
        .get("notification type")
        .map(str::to_string)
        .or_else(|| subj.as_ref().map(|s| s.0.clone()));
    let summary = f
        .get("additional info")
        .or_else(|| f.get("info"))
        .unwrap_or("");
    Some(Alert {
        source,
        host,
        service,
        state,
        kind: kind_of(ntype.as_deref(), state),
        event_id: None,
        summary: one_line(summary),
    })
}

// ---------------------------------------------------------------- Icinga 2

static ICINGA2_BANNER: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"(?mi)^\s*\*{3,}\s*(Service|Host) Monitoring on\b[^\n]*\*{3,}\s*$"));
static ICINGA2_HOST_SUBJECT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(r"(?i)^\[(?P<type>[A-Z]+)\]\s+Host\s+(?P<host>.+?)\s+is\s+(?P<state>\w+)!?$")
});
static ICINGA2_SERVICE_SUBJECT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"(?i)^\[(?P<type>[A-Z]+)\]\s+(?P<service>.+?)\s+on\s+(?P<host>.+?)\s+is\s+(?P<state>\w+)!?$",
    )
});
static ICINGA2_STATE_LINE: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"(?m)^\s*\S.*?\s+is\s+(?P<state>[A-Za-z]+)!\s*$"));

/// Icinga 2's mail-host-notification.sh and mail-service-notification.sh
/// (2.8 and later): `[PROBLEM] Host X is DOWN!`, `[RECOVERY] S on X is OK!`,
/// a `***** Service Monitoring on … *****` banner, then `Info:`, `When:`,
/// `Service:`, `Host:` fields.
fn icinga2(subject: &str, body: &str, f: &Fields) -> Option<Alert> {
    let banner = ICINGA2_BANNER.as_ref()?.captures(body);
    let host_subj = ICINGA2_HOST_SUBJECT
        .as_ref()
        .and_then(|r| r.captures(subject));
    let svc_subj = if host_subj.is_none() {
        ICINGA2_SERVICE_SUBJECT
            .as_ref()
            .and_then(|r| r.captures(subject))
    } else {
        None
    };
    let subj = host_subj.as_ref().or(svc_subj.as_ref());
    // Either the banner, or the subject together with the fields.
    if banner.is_none() && !(subj.is_some() && f.has("host") && f.has("when")) {
        return None;
    }
    let is_host = match &banner {
        Some(b) => b[1].eq_ignore_ascii_case("host"),
        None => host_subj.is_some(),
    };
    let host = f
        .get("host")
        .map(str::to_string)
        .or_else(|| subj.map(|c| c["host"].to_string()))?;
    let service = if is_host {
        None
    } else {
        f.get("service")
            .map(str::to_string)
            .or_else(|| svc_subj.as_ref().map(|c| c["service"].to_string()))
    };
    if !is_host && service.is_none() {
        return None;
    }
    let state = ICINGA2_STATE_LINE
        .as_ref()
        .and_then(|r| r.captures(body))
        .and_then(|c| AlertState::from_word(&c["state"]))
        .or_else(|| subj.and_then(|c| AlertState::from_word(&c["state"])))?;
    let ntype = subj.map(|c| c["type"].to_string());
    Some(Alert {
        source: AlertSource::Icinga2,
        host,
        service,
        state,
        kind: kind_of(ntype.as_deref(), state),
        event_id: None,
        summary: one_line(f.get("info").unwrap_or("")),
    })
}

// ---------------------------------------------------------------- Checkmk

static CHECKMK_SUBJECT: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"(?i)^Check_?MK:\s*(?P<rest>.+)$"));
static CHECKMK_TRANSITION: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"^\s*(?P<from>[A-Z]+)\s*->\s*(?P<to>[A-Z]+)\s*$"));
static CHECKMK_PAREN: LazyLock<Option<Regex>> = LazyLock::new(|| re(r"\((?P<state>[A-Z]+)\)\s*$"));
static CHECKMK_OUTPUT_STATE: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"^(?P<state>[A-Z]+)\b"));

/// Checkmk's mails, both with the subject `Check_MK: host/service OK ->
/// CRIT` or `Check_MK: host - UP -> DOWN`:
///
/// - the ASCII mail (asciimail.py): body `Host:`, `Alias:`, `Address:`,
///   `Service:`, `Event:`, `Output:`, `Perfdata:`;
/// - the HTML mail (mail.py, Checkmk's default notification method): its
///   text part has `Host:` (`name (alias)` when the alias differs),
///   `Service:`, `Event:`, `Address:`, `Time:`, `Summary:`, `Details:`.
fn checkmk(subject: &str, f: &Fields) -> Option<Alert> {
    CHECKMK_SUBJECT.as_ref()?.captures(subject)?;
    let host = checkmk_host(f.get("host")?);
    let event = f.get("event")?;
    let service = f.get("service").map(str::to_string);
    let output = f.get("output").or_else(|| f.get("summary")).unwrap_or("");
    let (state, kind) = if let Some(c) = CHECKMK_TRANSITION.as_ref().and_then(|r| r.captures(event))
    {
        let st = AlertState::from_word(&c["to"])?;
        (st, kind_of(None, st))
    } else {
        let st = CHECKMK_PAREN
            .as_ref()
            .and_then(|r| r.captures(event))
            .and_then(|c| AlertState::from_word(&c["state"]))
            .or_else(|| {
                CHECKMK_OUTPUT_STATE
                    .as_ref()
                    .and_then(|r| r.captures(output))
                    .and_then(|c| AlertState::from_word(&c["state"]))
            })
            .unwrap_or(AlertState::Unknown);
        let kind = if event.to_ascii_lowercase().starts_with("acknowledged") {
            AlertKind::Acknowledgement
        } else {
            AlertKind::Other
        };
        (st, kind)
    };
    // A host alert has UP/DOWN/UNREACH; the service states say "service".
    Some(Alert {
        source: AlertSource::Checkmk,
        host,
        service,
        state,
        kind,
        event_id: None,
        summary: one_line(output),
    })
}

/// The host name of a `Host:` line: the HTML mail writes `name (alias)`
/// when the alias differs; Checkmk host names have no whitespace.
fn checkmk_host(value: &str) -> String {
    match value.split_once(" (") {
        Some((name, rest)) if rest.ends_with(')') && !name.contains(char::is_whitespace) => {
            name.to_string()
        }
        _ => value.to_string(),
    }
}

// ---------------------------------------------------------------- Zabbix

static ZABBIX_SUBJECT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    re(
        r"(?i)^(?P<what>Problem|Resolved(?:\s+in\s+[^:]+)?|Updated problem(?:\s+in\s+[^:]+)?):\s*(?P<name>.+)$",
    )
});
static ZABBIX_STARTED: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"(?mi)^\s*Problem (?P<what>started|has been resolved)\b.*\bat\b"));

/// Zabbix's default message templates (5.0 – 7.x): subject `Problem:
/// {EVENT.NAME}` / `Resolved: …` / `Resolved in 5m: …`; body `Problem
/// started at … on …` or `Problem has been resolved …`, `Problem name:`,
/// `Host:`, `Severity:`, `Operational data:`, `Original problem ID:`. The
/// service is the problem name; the state follows the severity. Update
/// notifications carry no host and are not read.
///
/// Source: the defaults of the Email media type, as Zabbix 5.0 created them
/// (zabbix/zabbix `src/libs/zbxdbupgrade/dbupgrade_4050.c`, the patch that
/// moved the messages from the action to the media type); Zabbix 6.0 and
/// 7.x put the duration into the recovery (`Resolved in {EVENT.DURATION}:
/// {EVENT.NAME}`, `Problem has been resolved in {EVENT.DURATION} at …`).
fn zabbix(subject: &str, body: &str, f: &Fields) -> Option<Alert> {
    let started = ZABBIX_STARTED.as_ref()?.captures(body)?;
    let subj = ZABBIX_SUBJECT.as_ref().and_then(|r| r.captures(subject));
    let host = f.get("host")?.to_string();
    let name = f
        .get("problem name")
        .map(str::to_string)
        .or_else(|| subj.as_ref().map(|c| c["name"].trim().to_string()))?;
    if !f.has("severity") && !f.has("original problem id") {
        return None;
    }
    let resolved = started["what"].eq_ignore_ascii_case("has been resolved");
    let state = if resolved {
        AlertState::Ok
    } else {
        match f
            .get("severity")
            .unwrap_or("")
            .to_ascii_lowercase()
            .as_str()
        {
            "disaster" | "high" => AlertState::Critical,
            "average" | "warning" | "information" | "not classified" => AlertState::Warning,
            _ => AlertState::Unknown,
        }
    };
    let summary = match f.get("operational data") {
        Some(op) => format!("{name}: {op}"),
        None => name.clone(),
    };
    Some(Alert {
        source: AlertSource::Zabbix,
        host,
        service: Some(name),
        state,
        kind: kind_of(None, state),
        event_id: f.get("original problem id").map(str::to_string),
        summary: one_line(&summary),
    })
}

// ---------------------------------------------------------------- PRTG

static PRTG_SUBJECT: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"^\[(?P<site>[^\]]+)\]\s+(?P<rest>.+)$"));
static TRAILING_PAREN: LazyLock<Option<Regex>> = LazyLock::new(|| re(r"\s*\([^()]*\)\s*$"));

/// PRTG's default e-mail notification ("Email and push notification to
/// admin", and every new notification template).
///
/// The defaults, as the new-template form fills them in (its fields as
/// posted in the public proofs of concept for CVE-2018-9276): subject
/// `subject_1=[%sitename] %device %name %status %down (%message)`, format
/// `contenttype_1=text/html`, no custom text. PRTG's HTML and text bodies
/// are built into PRTG (closed source, no public template file); they
/// carry the fields of PRTG's own default ticket text from the same form
/// (`message_16`): `Sensor: %name`, `Status: %status %down`, `Date/Time:
/// %datetime (%timezone)`, `Last Result:`, `Last Message: %message`,
/// `Probe:`, `Group:`, `Device: %device (%host)`, `Last Scan:`, `Last
/// Up:`, `Last Down:`, `Uptime:`, `Downtime:`, `Cumulated since:`,
/// `Location:`. The HTML form is a two-column table, read through
/// [`table_cell_field`]. The sensor is the service, the device without its
/// address the host.
///
/// Recognised by the `[site]` subject or a PRTG sender, together with the
/// `Probe:` or `Group:` field. The state comes from `Status:`, see
/// [`prtg_status`].
fn prtg(mail: &ParsedMail, subject: &str, f: &Fields) -> Option<Alert> {
    let from_prtg = mail
        .from
        .as_ref()
        .map(|m| m.address.to_ascii_lowercase().contains("prtg"))
        .unwrap_or(false)
        || mail
            .from
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .map(|n| n.to_ascii_lowercase().contains("prtg"))
            .unwrap_or(false);
    let subj_ok = PRTG_SUBJECT.as_ref()?.is_match(subject);
    if !(subj_ok || from_prtg) || !(f.has("probe") || f.has("group")) {
        return None;
    }
    let device = f.get("device")?;
    let host = match TRAILING_PAREN.as_ref() {
        Some(r) => r.replace(device, "").trim().to_string(),
        None => device.to_string(),
    };
    let sensor = f.get("sensor")?.to_string();
    let (state, kind) = prtg_status(f.get("status")?)?;
    Some(Alert {
        source: AlertSource::Prtg,
        host,
        service: Some(sensor),
        state,
        kind,
        event_id: None,
        summary: one_line(f.get("last message").unwrap_or("")),
    })
}

/// A PRTG `%status %down` as its notifications write it: a sensor status
/// (`Up`, `Warning`, `Down`, `Down (Partial)`, `Down (Acknowledged)`,
/// `Unusual`, `Unknown`, `Paused …`), the escalation step of the default
/// trigger (`Down ESCALATION`), or a transition (`Down (before: Warning)`,
/// `Down ended (now: Up)`, `Warning ended (now: Down)`, `Down ended (now:
/// Paused)`). A transition's `now:` names the state the sensor is in; an
/// `… ended` without it is over. None for anything else.
fn prtg_status(status: &str) -> Option<(AlertState, AlertKind)> {
    let s = status.trim().to_ascii_lowercase();
    if s.contains("acknowledged") {
        return Some((AlertState::Critical, AlertKind::Acknowledgement));
    }
    let now = s
        .split_once("(now:")
        .map(|(_, rest)| rest.trim_start().trim_end_matches(')').trim());
    if now.is_none() && s.contains(" ended") {
        return Some((AlertState::Ok, AlertKind::Recovery));
    }
    let word = now.unwrap_or(&s);
    Some(if word.starts_with("up") {
        (AlertState::Ok, AlertKind::Recovery)
    } else if word.starts_with("down") {
        (AlertState::Critical, AlertKind::Problem)
    } else if word.starts_with("warning") || word.starts_with("unusual") {
        (AlertState::Warning, AlertKind::Problem)
    } else if word.starts_with("unknown") {
        (AlertState::Unknown, AlertKind::Problem)
    } else if word.starts_with("paused") {
        // Someone (or a schedule, or a dependency) paused the sensor: a
        // notice, neither a problem nor its end.
        (AlertState::Unknown, AlertKind::Other)
    } else {
        return None;
    })
}

// ---------------------------------------------------------------- Monit

static MONIT_SUBJECT: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"(?i)^monit alert\s*--\s*(?P<rest>.+)$"));
static MONIT_LINE: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(r"(?m)^\s*(?P<event>\S.*?)\s+Service\s+(?P<service>\S.*?)\s*$"));

/// Monit's default alert mail, used when monitrc has no `set mail-format`
/// (tildeslash's Monit, GitHub mirror MMonit/monit: `src/alert.h`
/// `ALERT_FROM`, `ALERT_SUBJECT`, `ALERT_MESSAGE`, sent by `src/alert.c`):
/// from `monit@$HOST`, subject `monit alert --  $EVENT $SERVICE` (two
/// spaces), body (CRLF line ends; the first line ends in a space, the
/// fields start with a tab)
///
/// ```text
/// $EVENT Service $SERVICE
///
///     Date:        $DATE
///     Action:      $ACTION
///     Host:        $HOST
///     Description: $DESCRIPTION
///
/// Your faithful employee,
/// Monit
/// ```
///
/// `$EVENT` is the event's description in its state (see
/// [`monit_event`]), `$SERVICE` the service's name (the system service is
/// named after the host), `$HOST` the name of the host Monit runs on.
fn monit(subject: &str, body: &str, f: &Fields) -> Option<Alert> {
    let from_subject = MONIT_SUBJECT.as_ref()?.is_match(subject);
    let line = MONIT_LINE.as_ref()?.captures(body)?;
    if !(from_subject || body.contains("Your faithful employee")) || !f.has("action") {
        return None;
    }
    let host = f.get("host")?.to_string();
    let event = line["event"].trim().to_string();
    let service = line["service"].trim().to_string();
    let (state, kind) = monit_event(&event);
    let summary = monit_description(body)
        .or_else(|| f.get("description").map(str::to_string))
        .unwrap_or(event);
    Some(Alert {
        source: AlertSource::Monit,
        host,
        service: Some(service),
        state,
        kind,
        event_id: None,
        summary: one_line(&summary),
    })
}

/// `$DESCRIPTION` with its continuation lines: a content match is
/// `content match:` and then the matching lines, a program's status test
/// its output.
fn monit_description(body: &str) -> Option<String> {
    let mut lines = body.lines().map(|l| l.trim_end_matches('\r'));
    let first = lines.find_map(|l| l.trim_start().strip_prefix("Description:"))?;
    let mut text = first.trim().to_string();
    for l in lines.take_while(|l| !l.trim().is_empty()) {
        text.push(' ');
        text.push_str(l.trim());
    }
    Some(text).filter(|t| !t.is_empty())
}

/// Monit's `$EVENT`: each event type has four descriptions, for its failed,
/// succeeded, changed and changed-not states (`Event_Table` in Monit's
/// `src/event.c`; the manual's event list). Monit 5.x and 6.0 name them by
/// event class: `Does not exist`/`Exists`, `Connection failed`/`Connection
/// succeeded`, `Resource limit matched`/`Resource limit succeeded`,
/// `Timeout`/`Timeout recovery`, `Link down`/`Link up`, `Download bytes
/// exceeded`/`Download bytes ok`, `Does exist`/`Exists not` (the `if exist`
/// test), `Content match`/`Content doesn't match`, `Checksum
/// changed`/`Checksum not changed`, `Action done`, `Monit instance
/// changed`; the development version after 6.0 names them by test (`CPU
/// usage matched limit`/`CPU usage ok`, `Load average (1min) matched
/// limit`/`Load average (1min) ok`, `Program start failed`/`Program
/// started`, `Process is a zombie`/`Zombie check succeeded`, …).
///
/// The succeeded and changed-not halves end the incident (OK, recovery),
/// and so does `Action done` (an action an administrator asked for is
/// done). A change (`… changed`, `Content match`) is what the test looks
/// for, and Monit runs the failure action on it: a problem, WARNING. Monit's
/// own start, stop and reload (`Monit instance changed`) is a notice that
/// must not resolve anything. Everything else is a failure: CRITICAL.
fn monit_event(event: &str) -> (AlertState, AlertKind) {
    let e = event.trim().to_ascii_lowercase();
    if e.starts_with("monit instance") {
        return (AlertState::Unknown, AlertKind::Other);
    }
    let recovered = matches!(
        e.as_str(),
        "exists"
            | "exists not"
            | "timeout recovery"
            | "link up"
            | "program started"
            | "action done"
            | "running"
    ) || e.ends_with(" succeeded")
        || e.ends_with(" ok")
        || e.ends_with(" not changed")
        || e.ends_with(" changed not")
        || e.ends_with(" doesn't match");
    if recovered {
        (AlertState::Ok, AlertKind::Recovery)
    } else if e.ends_with(" changed") || e.ends_with(" match") {
        (AlertState::Warning, AlertKind::Problem)
    } else {
        (AlertState::Critical, AlertKind::Problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::parse::parse;

    fn mail(raw: &str) -> ParsedMail {
        parse(raw.as_bytes()).unwrap()
    }

    #[test]
    fn nagios_recovery_under_problem_subject() {
        let m = mail("From: nagios@x\r\nSubject: ** PROBLEM Service Alert: h1/Disk is CRITICAL **\r\n\r\n***** Nagios *****\r\n\r\nNotification Type: PROBLEM\r\n\r\nService: Disk\r\nHost: h1\r\nState: OK\r\n\r\nAdditional Info:\r\n\r\nDISK OK\r\n");
        let a = parse_alert(&m, &[]).unwrap();
        assert_eq!(a.source, AlertSource::Nagios);
        assert_eq!(a.state, AlertState::Ok);
        assert_eq!(a.kind, AlertKind::Recovery);
        assert_eq!(a.summary, "DISK OK");
        assert_eq!(a.key(), "h1\u{1f}disk");
    }

    #[test]
    fn replies_and_people_are_not_alerts() {
        let m = mail("From: a@b\r\nSubject: Re: ** PROBLEM Service Alert: h1/Disk is CRITICAL **\r\n\r\n***** Nagios *****\r\nNotification Type: PROBLEM\r\nService: Disk\r\nHost: h1\r\nState: CRITICAL\r\n");
        assert!(parse_alert(&m, &[]).is_none());
        let m = mail("From: a@b\r\nSubject: Server down?\r\n\r\nHello, is the host down?\r\nHost: www\r\nState: DOWN\r\n");
        assert!(parse_alert(&m, &[]).is_none());
        let m = mail("From: a@b\r\nSubject: monit alert -- my question\r\n\r\nHi, what does Service mean?\r\n");
        assert!(parse_alert(&m, &[]).is_none());
    }

    #[test]
    fn generic_rule_compiles_validates_and_matches() {
        let cfg: GenericAlertConfig = toml::from_str(
            r#"
            name = "acme"
            from = "^alerts@acme\\.example$"
            subject = "^ACME"
            host = "host=(?P<host>\\S+)"
            service = "check=(?P<service>[^;]+)"
            state = "state=(?P<state>\\w+)"
            [states]
            bad = "critical"
            good = "ok"
            "#,
        )
        .unwrap();
        let rule = GenericAlertRule::compile("acme", &cfg).unwrap();
        assert_eq!(rule.name(), "acme");
        let m = mail("From: alerts@acme.example\r\nSubject: ACME host=db1 state=bad\r\n\r\ncheck=Backup; it failed\r\n");
        let a = parse_alert(&m, std::slice::from_ref(&rule)).unwrap();
        assert_eq!(a.source, AlertSource::Generic("acme".into()));
        assert_eq!(a.host, "db1");
        assert_eq!(a.service.as_deref(), Some("Backup"));
        assert_eq!(a.state, AlertState::Critical);
        assert_eq!(a.kind, AlertKind::Problem);
        let other =
            mail("From: someone@acme.example\r\nSubject: ACME host=db1 state=bad\r\n\r\nx\r\n");
        assert!(parse_alert(&other, &[rule]).is_none());

        let mut bad = cfg.clone();
        bad.host = "host=(\\S+)".into();
        assert!(GenericAlertRule::compile("acme", &bad)
            .unwrap_err()
            .contains("(?P<host>"));
        let mut bad = cfg.clone();
        bad.state = "(".into();
        assert!(GenericAlertRule::compile("acme", &bad).is_err());
        let mut bad = cfg.clone();
        (bad.from, bad.subject) = (None, None);
        assert!(GenericAlertRule::compile("acme", &bad)
            .unwrap_err()
            .contains("`from` or `subject`"));
        let mut bad = cfg;
        bad.states.insert("meh".into(), "so-so".into());
        assert!(GenericAlertRule::compile("acme", &bad).is_err());
    }

    #[test]
    fn built_in_patterns_compile() {
        let all: [&LazyLock<Option<Regex>>; 17] = [
            &NAGIOS_BANNER,
            &NAGIOS_SUBJECT,
            &ICINGA_SUBJECT,
            &ICINGA2_BANNER,
            &ICINGA2_HOST_SUBJECT,
            &ICINGA2_SERVICE_SUBJECT,
            &ICINGA2_STATE_LINE,
            &CHECKMK_SUBJECT,
            &CHECKMK_TRANSITION,
            &CHECKMK_PAREN,
            &CHECKMK_OUTPUT_STATE,
            &ZABBIX_SUBJECT,
            &ZABBIX_STARTED,
            &PRTG_SUBJECT,
            &TRAILING_PAREN,
            &MONIT_SUBJECT,
            &MONIT_LINE,
        ];
        for (i, r) in all.iter().enumerate() {
            assert!(r.is_some(), "pattern {i}");
        }
    }

    #[test]
    fn checkmk_html_mail_host_line_and_summary() {
        assert_eq!(checkmk_host("db01 (db01.example.com)"), "db01");
        assert_eq!(checkmk_host("db01"), "db01");
        assert_eq!(checkmk_host("db 01 (x)"), "db 01 (x)");
        // The text part of mail.py without an alias: only "Summary:" carries the output.
        let m = mail("From: site@cmk\r\nSubject: Check_MK: db01 - UP -> DOWN\r\n\r\nHost:                db01\r\nEvent:               UP -> DOWN\r\nAddress:             192.0.2.20\r\nSummary:             CRIT - 192.0.2.20: rta nan, lost 100%\r\n");
        let a = parse_alert(&m, &[]).unwrap();
        assert_eq!(a.source, AlertSource::Checkmk);
        assert_eq!((a.host.as_str(), a.service.as_deref()), ("db01", None));
        assert_eq!((a.state, a.kind), (AlertState::Down, AlertKind::Problem));
        assert_eq!(a.summary, "CRIT - 192.0.2.20: rta nan, lost 100%");
    }

    #[test]
    fn subject_only_icinga1_and_person_with_fields() {
        // Icinga 1 banner with the state only in the subject.
        let m = mail("From: icinga@x\r\nSubject: PROBLEM - h2 - Load is CRITICAL\r\n\r\n***** Icinga *****\r\n\r\nNotification Type: PROBLEM\r\n");
        let a = parse_alert(&m, &[]).unwrap();
        assert_eq!(a.source, AlertSource::Icinga);
        assert_eq!(
            (a.host.as_str(), a.service.as_deref()),
            ("h2", Some("Load"))
        );
        assert_eq!(
            (a.state, a.kind),
            (AlertState::Critical, AlertKind::Problem)
        );
        // Fields a person may well write, without any template's frame.
        let m = mail("From: a@b\r\nSubject: Problem: printer\r\n\r\nProblem name: printer\r\nHost: pc12\r\nSeverity: High\r\n");
        assert!(parse_alert(&m, &[]).is_none());
        let m = mail(
            "From: a@b\r\nSubject: Check_MK: questions\r\n\r\nWe want to know: is it fine?\r\n",
        );
        assert!(parse_alert(&m, &[]).is_none());
        // A bounce quoting an alert.
        let mut m = mail("From: MAILER-DAEMON@x\r\nSubject: ** PROBLEM Service Alert: h1/Disk is CRITICAL **\r\n\r\n***** Nagios *****\r\nNotification Type: PROBLEM\r\nService: Disk\r\nHost: h1\r\nState: CRITICAL\r\n");
        assert!(parse_alert(&m, &[]).is_some());
        m.bounced = Some(Default::default());
        assert!(parse_alert(&m, &[]).is_none());
    }

    #[test]
    fn long_bodies_are_cut_at_a_char_boundary() {
        let m = ParsedMail {
            subject: "monit alert -- x".into(),
            body: "ä".repeat(MAX_BODY_BYTES),
            ..Default::default()
        };
        assert!(parse_alert(&m, &[]).is_none());
    }

    #[test]
    fn qp_without_headers_is_undone() {
        assert_eq!(qp_decode("a=3Db=\nc=20\n="), "a=bc \n");
        assert_eq!(qp_decode("loss = 0%"), "loss = 0%");
        assert_eq!(qp_decode("=4"), "=4");
    }

    #[test]
    fn monit_event_names_map_to_problems_and_recoveries() {
        use AlertKind::{Other, Problem, Recovery};
        use AlertState::{Critical, Ok, Unknown, Warning};
        let cases: &[(&str, AlertState, AlertKind)] = &[
            // Monit 5.x / 6.0 event table (src/event.c) and manual.
            ("Does not exist", Critical, Problem),
            ("Exists", Ok, Recovery),
            ("Does exist", Critical, Problem),
            ("Exists not", Ok, Recovery),
            ("Connection failed", Critical, Problem),
            ("Connection succeeded", Ok, Recovery),
            ("Resource limit matched", Critical, Problem),
            ("Resource limit succeeded", Ok, Recovery),
            ("Status failed", Critical, Problem),
            ("Status succeeded", Ok, Recovery),
            ("Checksum failed", Critical, Problem),
            ("Checksum succeeded", Ok, Recovery),
            ("Checksum changed", Warning, Problem),
            ("Checksum not changed", Ok, Recovery),
            ("Content match", Warning, Problem),
            ("Content doesn't match", Ok, Recovery),
            ("Timeout", Critical, Problem),
            ("Timeout recovery", Ok, Recovery),
            ("Invalid type", Critical, Problem),
            ("Type succeeded", Ok, Recovery),
            ("Data access error", Critical, Problem),
            ("Execution failed", Critical, Problem),
            ("Ping failed", Critical, Problem),
            ("ICMP succeeded", Ok, Recovery),
            ("Link down", Critical, Problem),
            ("Link up", Ok, Recovery),
            ("Speed failed", Critical, Problem),
            ("Speed ok", Ok, Recovery),
            ("Saturation exceeded", Critical, Problem),
            ("Saturation ok", Ok, Recovery),
            ("Download bytes exceeded", Critical, Problem),
            ("Upload packets ok", Ok, Recovery),
            ("Uptime failed", Critical, Problem),
            ("Action done", Ok, Recovery),
            ("Monit instance changed", Unknown, Other),
            ("Monit instance changed not", Unknown, Other),
            // The per-test names of the development version after 6.0.
            ("CPU usage matched limit", Critical, Problem),
            ("CPU usage ok", Ok, Recovery),
            ("Load average (1min) matched limit", Critical, Problem),
            ("Load average (1min) ok", Ok, Recovery),
            ("Service time matched limit", Critical, Problem),
            ("Download errors detected", Critical, Problem),
            ("Program start failed", Critical, Problem),
            ("Program started", Ok, Recovery),
            ("Process is a zombie", Critical, Problem),
            ("Zombie check succeeded", Ok, Recovery),
            ("Program output match", Warning, Problem),
            ("Program output doesn't match", Ok, Recovery),
            ("Certificate validity failed", Critical, Problem),
        ];
        for (event, state, kind) in cases {
            assert_eq!(monit_event(event), (*state, *kind), "{event}");
        }
    }

    #[test]
    fn monit_default_mail_with_a_per_test_event_and_a_notice() {
        let mail_for = |event: &str, service: &str, desc: &str| {
            mail(&format!(
                "From: monit@web01.example.com\r\nSubject: monit alert --  {event} {service}\r\nX-Mailer: Monit 6.1.0\r\nPrecedence: Bulk\r\n\r\n{event} Service {service} \r\n\r\n\tDate:        Mon, 04 Mar 2024 10:00:00\r\n\tAction:      alert\r\n\tHost:        web01\r\n\tDescription: {desc}\r\n\r\nYour faithful employee,\r\nMonit\r\n"
            ))
        };
        let a = parse_alert(
            &mail_for(
                "Service time matched limit",
                "datafs",
                "service time of 31.2 ms matches limit [service time > 10 ms]",
            ),
            &[],
        )
        .unwrap();
        assert_eq!(
            (a.host.as_str(), a.service.as_deref(), a.state, a.kind),
            (
                "web01",
                Some("datafs"),
                AlertState::Critical,
                AlertKind::Problem
            )
        );
        // Monit starting is a notice; it must not read as the system's recovery.
        let a = parse_alert(
            &mail_for("Monit instance changed", "web01", "Monit 6.1.0 started"),
            &[],
        )
        .unwrap();
        assert_eq!(a.kind, AlertKind::Other);
        assert!(!a.state.is_recovery());
        assert_eq!(a.summary, "Monit 6.1.0 started");
        // A multi-line description is kept whole, on one line.
        let a = parse_alert(
            &mail_for(
                "Content match",
                "app-log",
                "content match:\r\n10:01 ERROR db lost\r\n10:02 ERROR db lost",
            ),
            &[],
        )
        .unwrap();
        assert_eq!(
            a.summary,
            "content match: 10:01 ERROR db lost 10:02 ERROR db lost"
        );
        assert_eq!((a.state, a.kind), (AlertState::Warning, AlertKind::Problem));
    }

    #[test]
    fn prtg_statuses_and_transitions() {
        use AlertKind::{Acknowledgement, Other, Problem, Recovery};
        use AlertState::{Critical, Ok, Unknown, Warning};
        let cases: &[(&str, Option<(AlertState, AlertKind)>)] = &[
            ("Up", Some((Ok, Recovery))),
            ("Down", Some((Critical, Problem))),
            ("Down ESCALATION", Some((Critical, Problem))),
            ("Down (Partial)", Some((Critical, Problem))),
            ("Down (before: Warning)", Some((Critical, Problem))),
            ("Down (Acknowledged)", Some((Critical, Acknowledgement))),
            ("Warning", Some((Warning, Problem))),
            ("Warning (before: Down)", Some((Warning, Problem))),
            ("Unusual", Some((Warning, Problem))),
            ("Unknown", Some((Unknown, Problem))),
            ("Paused (paused by user)", Some((Unknown, Other))),
            ("Down ended (now: Up)", Some((Ok, Recovery))),
            ("Warning ended (now: Up)", Some((Ok, Recovery))),
            ("Down ended (now: Warning)", Some((Warning, Problem))),
            ("Warning ended (now: Down)", Some((Critical, Problem))),
            ("Down ended (now: Paused)", Some((Unknown, Other))),
            ("Down ended", Some((Ok, Recovery))),
            ("Scanning", None),
            ("", None),
        ];
        for (status, want) in cases {
            assert_eq!(prtg_status(status), *want, "{status:?}");
        }
    }

    #[test]
    fn states_and_kinds() {
        assert_eq!(AlertState::from_word("crit"), Some(AlertState::Critical));
        assert_eq!(
            AlertState::from_word("UNREACH"),
            Some(AlertState::Unreachable)
        );
        assert_eq!(AlertState::from_word("WARNING!"), Some(AlertState::Warning));
        assert_eq!(AlertState::from_word("fine"), None);
        assert!(AlertState::Up.is_recovery() && AlertState::Down.is_problem());
        assert_eq!(
            kind_of(Some("PROBLEM"), AlertState::Ok),
            AlertKind::Recovery
        );
        assert_eq!(
            kind_of(Some("FLAPPINGSTART"), AlertState::Ok),
            AlertKind::Other
        );
        assert_eq!(
            kind_of(Some("ACKNOWLEDGEMENT"), AlertState::Critical),
            AlertKind::Acknowledgement
        );
    }
}
