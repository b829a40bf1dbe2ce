//! The rule file as written: what `rules/*.toml` may contain, read with
//! the spans that error messages point to.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpec {
    #[serde(default)]
    pub(super) mode: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) case_sensitive: bool,
    #[serde(default, rename = "rule")]
    pub(super) rules: Vec<Spanned<RuleSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) severity: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) action: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) forward: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) reply: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) queue: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) tags: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) customer: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) plan: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) mailbox: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) alert: Option<Spanned<AlertSpec>>,
    #[serde(default)]
    pub(super) subject: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) body: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) text: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) from: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) to: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) header: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) unless: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertSpec {
    #[serde(default)]
    pub(super) source: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) state: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) host: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) service: Vec<Spanned<String>>,
}
