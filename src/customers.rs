//! The customer directory: organisations with their contacts, mail domains,
//! support plan and the people who want mail about their tickets.
//!
//! It is configuration, not data: TOML files in the customers directory
//! (`[customers] dir`, default `<data_dir>/customers`), one or more
//! organisations each, read at start and again on SIGHUP. `ticketd customers
//! import FILE.csv` turns a spreadsheet export into such a file. A mail
//! address belongs to the organisation that lists it as a contact, else to
//! the one that owns its domain (or a parent domain: `mail.kunde.de` belongs
//! to `kunde.de`); no address or domain may belong to two.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// A customer organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Short stable identifier (letters, digits, `-`, `_`), stored on tickets.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The support plan's name (e.g. Basic, Advanced, Premium).
    #[serde(default)]
    pub plan: Option<String>,
    /// Mail domains whose senders belong to this organisation.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Known contacts' addresses (also from domains not listed above).
    #[serde(default)]
    pub contacts: Vec<String>,
    /// The main contact (a plan may allow only one).
    #[serde(default)]
    pub main_contact: Option<String>,
    /// Further main contacts, for plans that allow several. Tickets from
    /// other people of the organisation are flagged `not-main-contact`
    /// when the plan limits main contacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub main_contacts: Vec<String>,
    /// Language of mails to this customer (`de`, `en`); default the desk's.
    #[serde(default)]
    pub language: Option<String>,
    /// Contacts who want another language than the organisation's
    /// (address → `de`, `en`); they count as contacts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contact_language: BTreeMap<String, String>,
    /// Time zone of this customer (IANA name); default the desk's.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The account manager's address (over-quota and routed mail).
    #[serde(default)]
    pub account_manager: Option<String>,
    /// Hosts monitored for this organisation: an alert about one belongs
    /// to it, whoever sends it (the provider's own monitoring, say).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Hosts whose outage is business-critical (monitoring: severity 1);
    /// they count as the organisation's hosts too.
    #[serde(default)]
    pub critical_hosts: Vec<String>,
    /// Who gets a mail on each new ticket.
    #[serde(default)]
    pub notify_new: Vec<String>,
    /// Who gets a mail on each status change.
    #[serde(default)]
    pub notify_status: Vec<String>,
}

/// A support plan's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Its name, as organisations name it.
    pub name: String,
    /// Cases per calendar quarter; none: unlimited.
    #[serde(default)]
    pub cases_per_quarter: Option<u32>,
    /// Main contacts allowed; none: unlimited.
    #[serde(default)]
    pub main_contacts: Option<u32>,
}

/// One file of the directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryFile {
    /// Plans defined in this file.
    #[serde(default, rename = "plan")]
    pub plans: Vec<Plan>,
    /// Organisations defined in this file.
    #[serde(default, rename = "organisation")]
    pub organisations: Vec<Organisation>,
}

/// Why the directory cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {reason}", if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct DirectoryError {
    /// The file (or directory).
    pub file: String,
    /// 1-based line; 0 when the whole file is meant.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The loaded directory, indexed for lookups.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    organisations: Vec<Organisation>,
    plans: Vec<Plan>,
    by_address: HashMap<String, usize>,
    by_domain: HashMap<String, usize>,
    by_host: HashMap<String, usize>,
}

impl Organisation {
    /// The language of mails to `address` (a sender of this organisation):
    /// its `contact_language`, else the organisation's `language`.
    pub fn language_of(&self, address: &str) -> Option<&str> {
        self.contact_language
            .get(&address.trim().to_ascii_lowercase())
            .or(self.language.as_ref())
            .map(String::as_str)
    }

    /// Every main contact: `main_contact` and `main_contacts`, each once.
    pub fn main_contact_list(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .main_contact
            .iter()
            .chain(&self.main_contacts)
            .map(String::as_str)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

impl Directory {
    /// Every `*.toml` file in `dir`, in name order; a missing directory is
    /// an empty directory (no customers configured).
    pub fn load(dir: &Path) -> Result<Directory, DirectoryError> {
        let err = |file: &Path, line: usize, reason: String| DirectoryError {
            file: file.display().to_string(),
            line,
            reason,
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Directory::default());
            }
            Err(e) => return Err(err(dir, 0, e.to_string())),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut parts = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| err(&f, 0, e.to_string()))?;
            let part: DirectoryFile = toml::from_str(&text).map_err(|e| {
                let line = e
                    .span()
                    .map(|s| crate::config::line_col(&text, s.start).0)
                    .unwrap_or(0);
                err(&f, line, e.message().to_string())
            })?;
            parts.push((f.display().to_string(), part));
        }
        Directory::build(parts)
    }

    /// Builds the directory from parsed files (`(name, file)`), checking
    /// that ids, addresses and domains are unique and well-formed.
    pub fn build(parts: Vec<(String, DirectoryFile)>) -> Result<Directory, DirectoryError> {
        let mut d = Directory::default();
        let mut ids: HashMap<String, String> = HashMap::new();
        for (file, part) in parts {
            let bad = |reason: String| DirectoryError {
                file: file.clone(),
                line: 0,
                reason,
            };
            for p in part.plans {
                if d.plans.iter().any(|q| q.name.eq_ignore_ascii_case(&p.name)) {
                    return Err(bad(format!("plan {:?} is defined twice", p.name)));
                }
                d.plans.push(p);
            }
            for mut o in part.organisations {
                if o.id.is_empty()
                    || !o
                        .id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(bad(format!(
                        "organisation id {:?}: use letters, digits, '-' and '_'",
                        o.id
                    )));
                }
                if let Some(other) = ids.insert(o.id.clone(), file.clone()) {
                    return Err(bad(format!(
                        "organisation {:?} is also defined in {other}",
                        o.id
                    )));
                }
                o.contact_language = std::mem::take(&mut o.contact_language)
                    .into_iter()
                    .map(|(a, l)| (a.trim().to_ascii_lowercase(), l.trim().to_ascii_lowercase()))
                    .collect();
                for a in o.contact_language.keys() {
                    if !o.contacts.iter().any(|c| c.trim().eq_ignore_ascii_case(a)) {
                        o.contacts.push(a.clone());
                    }
                }
                normalise(&mut o.contacts);
                normalise(&mut o.domains);
                normalise(&mut o.notify_new);
                normalise(&mut o.notify_status);
                normalise(&mut o.hosts);
                normalise(&mut o.critical_hosts);
                normalise(&mut o.main_contacts);
                o.main_contact = o.main_contact.map(|a| a.trim().to_ascii_lowercase());
                o.account_manager = o.account_manager.map(|a| a.trim().to_ascii_lowercase());
                let at = d.organisations.len();
                for a in o
                    .contacts
                    .iter()
                    .chain(&o.notify_new)
                    .chain(&o.notify_status)
                    .chain(o.main_contact.iter())
                    .chain(&o.main_contacts)
                    .chain(o.account_manager.iter())
                {
                    if !is_address(a) {
                        return Err(bad(format!("{}: {a:?} is not a mail address", o.id)));
                    }
                }
                for a in o
                    .contacts
                    .iter()
                    .chain(o.main_contact.iter())
                    .chain(&o.main_contacts)
                {
                    if let Some(prev) = d.by_address.insert(a.clone(), at) {
                        if prev != at {
                            return Err(bad(format!(
                                "{a} is a contact of both {} and {}",
                                d.organisations[prev].id, o.id
                            )));
                        }
                    }
                }
                for dom in &o.domains {
                    if dom.contains('@') || !dom.contains('.') || dom.starts_with('.') {
                        return Err(bad(format!("{}: {dom:?} is not a mail domain", o.id)));
                    }
                    if let Some(prev) = d.by_domain.insert(dom.clone(), at) {
                        return Err(bad(format!(
                            "domain {dom} belongs to both {} and {}",
                            d.organisations[prev].id, o.id
                        )));
                    }
                }
                for h in o.hosts.iter().chain(&o.critical_hosts) {
                    if let Some(prev) = d.by_host.insert(h.clone(), at) {
                        if prev != at {
                            return Err(bad(format!(
                                "host {h} belongs to both {} and {}",
                                d.organisations[prev].id, o.id
                            )));
                        }
                    }
                }
                d.organisations.push(o);
            }
        }
        for o in &d.organisations {
            if let Some(p) = &o.plan {
                if !d.plans.is_empty() && d.plan(p).is_none() {
                    return Err(DirectoryError {
                        file: "customers".into(),
                        line: 0,
                        reason: format!("{}: plan {p:?} is not defined", o.id),
                    });
                }
                let allowed = d.plan(p).and_then(|p| p.main_contacts);
                let named = o.main_contact_list();
                if let Some(n) = allowed.filter(|&n| named.len() > n as usize) {
                    return Err(DirectoryError {
                        file: "customers".into(),
                        line: 0,
                        reason: format!(
                            "{}: {} main contacts ({}), but plan {p} allows {n}",
                            o.id,
                            named.len(),
                            named.join(", ")
                        ),
                    });
                }
            }
        }
        Ok(d)
    }

    /// The organisation a mail address belongs to: a listed contact first,
    /// then the owner of its domain or of the nearest parent domain.
    pub fn lookup(&self, address: &str) -> Option<&Organisation> {
        let a = address.trim().to_ascii_lowercase();
        if let Some(&i) = self.by_address.get(&a) {
            return self.organisations.get(i);
        }
        let mut domain = a.rsplit_once('@')?.1;
        loop {
            if let Some(&i) = self.by_domain.get(domain) {
                return self.organisations.get(i);
            }
            domain = domain.split_once('.')?.1;
            if !domain.contains('.') {
                return None;
            }
        }
    }

    /// The organisation a monitored host belongs to (case-insensitive).
    pub fn lookup_host(&self, host: &str) -> Option<&Organisation> {
        let h = host.trim().to_ascii_lowercase();
        self.by_host
            .get(&h)
            .and_then(|&i| self.organisations.get(i))
    }

    /// The organisation with this id.
    pub fn get(&self, id: &str) -> Option<&Organisation> {
        self.organisations.iter().find(|o| o.id == id)
    }

    /// A plan by name (case-insensitive).
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Every organisation, in file order.
    pub fn organisations(&self) -> &[Organisation] {
        &self.organisations
    }

    /// Every plan.
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }
}

fn normalise(list: &mut Vec<String>) {
    for a in list.iter_mut() {
        *a = a.trim().to_ascii_lowercase();
    }
    list.retain(|a| !a.is_empty());
    list.sort();
    list.dedup();
}

fn is_address(a: &str) -> bool {
    matches!(a.split_once('@'), Some((l, d)) if !l.is_empty() && d.contains('.'))
        && !a.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The columns `customers import` reads; lists inside a cell are separated
/// by `;` (or `,` inside quotes).
pub const CSV_COLUMNS: &[&str] = &[
    "id",
    "name",
    "plan",
    "domains",
    "contacts",
    "main_contact",
    "language",
    "timezone",
    "account_manager",
    "hosts",
    "critical_hosts",
    "notify_new",
    "notify_status",
];

/// Reads organisations from CSV with a header row naming [`CSV_COLUMNS`]
/// (`id` and `name` required, the others optional, in any order). Errors
/// name the line.
pub fn from_csv(text: &str, file: &str) -> Result<Vec<Organisation>, DirectoryError> {
    let bad = |line: usize, reason: String| DirectoryError {
        file: file.to_string(),
        line,
        reason,
    };
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = r.headers().map_err(|e| bad(1, e.to_string()))?.clone();
    let mut col = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim().to_ascii_lowercase();
        if !CSV_COLUMNS.contains(&h.as_str()) {
            return Err(bad(
                1,
                format!("unknown column {h:?} (known: {})", CSV_COLUMNS.join(", ")),
            ));
        }
        col.insert(h, i);
    }
    for required in ["id", "name"] {
        if !col.contains_key(required) {
            return Err(bad(1, format!("the column {required:?} is missing")));
        }
    }
    let mut out = Vec::new();
    for (n, rec) in r.records().enumerate() {
        let line = n + 2;
        let rec = rec.map_err(|e| bad(line, e.to_string()))?;
        let cell = |name: &str| -> String {
            col.get(name)
                .and_then(|&i| rec.get(i))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let opt = |name: &str| Some(cell(name)).filter(|s| !s.is_empty());
        let list = |name: &str| -> Vec<String> {
            cell(name)
                .split([';', ','])
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let id = cell("id");
        if id.is_empty() {
            return Err(bad(line, "id is empty".into()));
        }
        out.push(Organisation {
            id,
            name: cell("name"),
            plan: opt("plan"),
            domains: list("domains"),
            contacts: list("contacts"),
            main_contact: opt("main_contact"),
            main_contacts: Vec::new(),
            language: opt("language"),
            contact_language: BTreeMap::new(),
            timezone: opt("timezone"),
            account_manager: opt("account_manager"),
            hosts: list("hosts"),
            critical_hosts: list("critical_hosts"),
            notify_new: list("notify_new"),
            notify_status: list("notify_status"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(text: &str) -> Result<Directory, DirectoryError> {
        let part: DirectoryFile = toml::from_str(text).expect("toml");
        Directory::build(vec![("t.toml".into(), part)])
    }

    const SAMPLE: &str = r#"
[[plan]]
name = "Basic"
cases_per_quarter = 10
main_contacts = 1

[[plan]]
name = "Premium"

[[organisation]]
id = "stadtwerke"
name = "Stadtwerke Beispiel"
plan = "Premium"
domains = ["stadtwerke-beispiel.de"]
contacts = ["Anna.Schneider@stadtwerke-beispiel.de", "it@partner.example"]
account_manager = "am@provider.example"
critical_hosts = ["erp01"]

[[organisation]]
id = "baeckerei"
name = "Bäckerei Korn"
plan = "basic"
domains = ["korn.example"]
"#;

    #[test]
    fn lookup_by_contact_then_domain_then_parent_domain() {
        let d = dir(SAMPLE).expect("valid");
        assert_eq!(
            d.lookup("anna.schneider@STADTWERKE-beispiel.de")
                .map(|o| o.id.as_str()),
            Some("stadtwerke")
        );
        // A contact outside the organisation's domains.
        assert_eq!(
            d.lookup("it@partner.example").map(|o| o.id.as_str()),
            Some("stadtwerke")
        );
        assert_eq!(
            d.lookup("x@korn.example").map(|o| o.id.as_str()),
            Some("baeckerei")
        );
        assert_eq!(
            d.lookup("x@mail.korn.example").map(|o| o.id.as_str()),
            Some("baeckerei")
        );
        assert_eq!(d.lookup("x@example"), None);
        assert_eq!(d.lookup("stranger@gmail.com"), None);
        assert_eq!(d.lookup("no-at-sign"), None);
        assert_eq!(d.plan("BASIC").and_then(|p| p.cases_per_quarter), Some(10));
        assert_eq!(
            d.lookup_host("ERP01").map(|o| o.id.as_str()),
            Some("stadtwerke")
        );
        assert_eq!(d.lookup_host("web99"), None);
    }

    #[test]
    fn conflicts_and_bad_values_are_errors() {
        let twice = "[[organisation]]\nid = \"a\"\nname = \"A\"\ndomains = [\"x.de\"]\n\
                     [[organisation]]\nid = \"b\"\nname = \"B\"\ndomains = [\"X.de\"]\n";
        assert!(dir(twice).unwrap_err().reason.contains("belongs to both"));
        let contact = "[[organisation]]\nid = \"a\"\nname = \"A\"\ncontacts = [\"p@x.de\"]\n\
                       [[organisation]]\nid = \"b\"\nname = \"B\"\ncontacts = [\"p@x.de\"]\n";
        assert!(dir(contact).unwrap_err().reason.contains("contact of both"));
        let same_id = "[[organisation]]\nid = \"a\"\nname = \"A\"\n[[organisation]]\nid = \"a\"\nname = \"B\"\n";
        assert!(dir(same_id).unwrap_err().reason.contains("also defined"));
        let bad_id = "[[organisation]]\nid = \"a b\"\nname = \"A\"\n";
        assert!(dir(bad_id).is_err());
        let bad_addr = "[[organisation]]\nid = \"a\"\nname = \"A\"\nnotify_new = [\"nobody\"]\n";
        assert!(dir(bad_addr)
            .unwrap_err()
            .reason
            .contains("not a mail address"));
        let no_plan = "[[plan]]\nname = \"Basic\"\n[[organisation]]\nid = \"a\"\nname = \"A\"\nplan = \"Gold\"\n";
        assert!(dir(no_plan).unwrap_err().reason.contains("not defined"));
    }

    #[test]
    fn a_missing_directory_is_empty_and_a_broken_file_names_its_line() {
        let tmp = tempfile::tempdir().expect("tmp");
        let none = Directory::load(&tmp.path().join("absent")).expect("empty");
        assert!(none.organisations().is_empty());
        std::fs::write(
            tmp.path().join("a.toml"),
            "[[organisation]]\nid = \"a\"\nnmae = \"A\"\n",
        )
        .expect("write");
        let e = Directory::load(tmp.path()).unwrap_err();
        assert!(e.file.ends_with("a.toml"), "{e}");
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn csv_import_reads_lists_and_rejects_unknown_columns() {
        let csv = "id,name,plan,domains,contacts,critical_hosts\n\
                   stadtwerke,Stadtwerke Beispiel,Premium,\"stadtwerke-beispiel.de;sw.example\",anna@stadtwerke-beispiel.de,erp01;erp02\n\
                   korn,\"Bäckerei Korn, Inh. Meier\",Basic,korn.example,,\n";
        let orgs = from_csv(csv, "k.csv").expect("csv");
        assert_eq!(orgs.len(), 2);
        assert_eq!(orgs[0].domains, ["stadtwerke-beispiel.de", "sw.example"]);
        assert_eq!(orgs[0].critical_hosts, ["erp01", "erp02"]);
        assert_eq!(orgs[1].name, "Bäckerei Korn, Inh. Meier");
        assert!(orgs[1].contacts.is_empty());
        let e = from_csv("id,name,colour\na,A,red\n", "k.csv").unwrap_err();
        assert!(e.reason.contains("unknown column"), "{e}");
        let e = from_csv("name\nA\n", "k.csv").unwrap_err();
        assert!(e.reason.contains("\"id\""), "{e}");
        let e = from_csv("id,name\n,A\n", "k.csv").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn a_plan_limits_its_main_contacts() {
        let base = "[[plan]]\nname = \"Basic\"\nmain_contacts = 1\n\n[[organisation]]\nid = \"k\"\nname = \"K\"\nplan = \"Basic\"\ndomains = [\"k.de\"]\n";
        let ok = dir(&format!("{base}main_contact = \"Chef@k.de\"\n")).unwrap();
        assert_eq!(
            ok.lookup("chef@k.de").unwrap().main_contact_list(),
            ["chef@k.de"]
        );
        let e = dir(&format!(
            "{base}main_contact = \"chef@k.de\"\nmain_contacts = [\"it@k.de\"]\n"
        ))
        .unwrap_err();
        assert!(
            e.reason.contains("2 main contacts") && e.reason.contains("allows 1"),
            "{e}"
        );
    }
}
