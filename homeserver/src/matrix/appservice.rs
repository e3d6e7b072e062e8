//! Application-service registrations: the YAML file every bridge writes, parsed and checked.
//!
//! One [`Registration`] is one file (`<data_dir>/appservices/<id>.yaml`). [`Registration::parse`]
//! checks a file on its own (tokens, regexes, sender, URL); [`check_set`] checks files against
//! each other (unique ids and tokens, exclusive namespaces that do not overlap). The server's
//! loader and `appliance appservice add` both call these two, so a file the CLI accepts is a
//! file the server loads.
//!
//! Deviations from the spec, for a unit that resolves no names:
//! - `url` must be `http://` with an IP literal or `localhost` host (or null: a send-only
//!   appservice). A host name would need DNS, which a sealed unit does not have; `https://`
//!   would need a CA the unit trusts for appservices, which it does not have (appservices run
//!   on loopback or the unit's own network).
//! - Namespace regexes match from the start of the ID (as Synapse's `re.match` does, which is
//!   what bridges are written against); they need not match to the end.
//! - Whether two exclusive regexes overlap is undecidable in general; [`check_set`] treats two
//!   as overlapping when the literal prefix of one is a prefix of the other's (which is how
//!   bridges' `@prefix_.*:server` patterns overlap), or when either has no literal prefix.

use std::collections::BTreeSet;
use std::fmt;

use regex::Regex;
use serde::Deserialize;

/// A registration file that cannot be used, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationError {
    /// The field (`namespaces.users[1].regex`), or `file` for the whole file.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RegistrationError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for RegistrationError {}

/// One namespace entry as the file writes it.
#[derive(Debug, Clone, Deserialize)]
struct RawNamespace {
    #[serde(default)]
    exclusive: bool,
    regex: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawNamespaces {
    #[serde(default)]
    users: Option<Vec<RawNamespace>>,
    #[serde(default)]
    aliases: Option<Vec<RawNamespace>>,
    #[serde(default)]
    rooms: Option<Vec<RawNamespace>>,
}

/// The file as YAML gives it; unknown keys are ignored (bridges write their own).
#[derive(Debug, Clone, Deserialize)]
struct RawRegistration {
    id: String,
    url: Option<String>,
    as_token: String,
    hs_token: String,
    sender_localpart: String,
    #[serde(default)]
    namespaces: RawNamespaces,
    #[serde(default)]
    rate_limited: Option<bool>,
    #[serde(default)]
    protocols: Option<Vec<String>>,
    #[serde(default)]
    receive_ephemeral: Option<bool>,
    #[serde(default, rename = "de.sorunome.msc2409.push_ephemeral")]
    msc2409_push_ephemeral: Option<bool>,
    #[serde(default, rename = "push_ephemeral")]
    push_ephemeral: Option<bool>,
    #[serde(default, rename = "org.matrix.msc3202")]
    msc3202: Option<bool>,
    #[serde(default, rename = "io.element.msc4190")]
    msc4190: Option<bool>,
}

/// One compiled namespace regex.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// Whether only this appservice may use the IDs it matches.
    pub exclusive: bool,
    /// The regex as written in the file.
    pub source: String,
    regex: Regex,
}

impl Namespace {
    fn compile(raw: &RawNamespace, field: &str) -> Result<Self, RegistrationError> {
        if raw.regex.is_empty() {
            return Err(RegistrationError::new(field, "is empty"));
        }
        let regex = Regex::new(&format!("^(?:{})", raw.regex))
            .map_err(|e| RegistrationError::new(field, format!("is not a valid regex: {e}")))?;
        Ok(Self {
            exclusive: raw.exclusive,
            source: raw.regex.clone(),
            regex,
        })
    }

    /// Whether `id` is in this namespace.
    pub fn matches(&self, id: &str) -> bool {
        self.regex.is_match(id)
    }

    /// The literal text every match starts with (up to the first regex metacharacter).
    fn literal_prefix(&self) -> String {
        let mut prefix = String::new();
        let mut chars = self.source.trim_start_matches('^').chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&next) if !next.is_ascii_alphanumeric() => {
                        prefix.push(next);
                        chars.next();
                    }
                    _ => break,
                },
                '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '$' | '^' => {
                    // A quantifier makes the previous character optional.
                    if matches!(c, '*' | '?' | '{') {
                        prefix.pop();
                    }
                    break;
                }
                c => prefix.push(c),
            }
        }
        prefix
    }

    /// Whether this and `other` may both match one ID (see the module header).
    fn may_overlap(&self, other: &Namespace) -> bool {
        let (a, b) = (self.literal_prefix(), other.literal_prefix());
        a.is_empty() || b.is_empty() || a.starts_with(&b) || b.starts_with(&a)
    }
}

/// The three namespace lists of a registration.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    /// User IDs (`@irc_.*:unit-a`).
    pub users: Vec<Namespace>,
    /// Room aliases (`#irc_.*:unit-a`).
    pub aliases: Vec<Namespace>,
    /// Room IDs.
    pub rooms: Vec<Namespace>,
}

/// Which namespace list a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceKind {
    /// `namespaces.users`.
    Users,
    /// `namespaces.aliases`.
    Aliases,
    /// `namespaces.rooms`.
    Rooms,
}

impl NamespaceKind {
    fn field(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Aliases => "aliases",
            Self::Rooms => "rooms",
        }
    }
}

impl Namespaces {
    /// The list of `kind`.
    pub fn of(&self, kind: NamespaceKind) -> &[Namespace] {
        match kind {
            NamespaceKind::Users => &self.users,
            NamespaceKind::Aliases => &self.aliases,
            NamespaceKind::Rooms => &self.rooms,
        }
    }
}

/// A checked registration file.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Unique id of the appservice (names it in the CLI, the ping endpoint and the queue).
    pub id: String,
    /// Base URL the server pushes to (`http://127.0.0.1:29331`); `None` for a send-only
    /// appservice, which is never called.
    pub url: Option<String>,
    /// The token the appservice presents to us.
    pub as_token: String,
    /// The token we present to the appservice.
    pub hs_token: String,
    /// Localpart of the appservice's own user (its bot), always in its namespace.
    pub sender_localpart: String,
    /// The IDs it is interested in (and, when exclusive, alone may use).
    pub namespaces: Namespaces,
    /// Whether its requests are rate limited (default: yes, as the spec says).
    pub rate_limited: bool,
    /// Third-party protocols it bridges (for `/thirdparty/protocols`).
    pub protocols: Vec<String>,
    /// Whether it wants receipts, typing, presence and to-device messages (MSC2409; spec
    /// `receive_ephemeral` or either unstable name).
    pub receive_ephemeral: bool,
    /// Whether it wants device-list changes and one-time-key counts (MSC3202).
    pub msc3202: bool,
    /// Whether it manages its users' devices itself (MSC4190).
    pub msc4190: bool,
}

impl Registration {
    /// Parses and checks one registration file's text. `server_name` is this unit's: the
    /// sender `@<sender_localpart>:<server_name>` must be a valid user ID.
    pub fn parse(yaml: &str, server_name: &str) -> Result<Self, RegistrationError> {
        let raw: RawRegistration = serde_yaml_ng::from_str(yaml)
            .map_err(|e| RegistrationError::new("file", format!("is not a registration: {e}")))?;
        check_token_like(&raw.id, "id")?;
        check_token_like(&raw.as_token, "as_token")?;
        check_token_like(&raw.hs_token, "hs_token")?;
        if raw.as_token == raw.hs_token {
            return Err(RegistrationError::new(
                "hs_token",
                "equals as_token; the two directions need different secrets",
            ));
        }
        let sender = format!("@{}:{server_name}", raw.sender_localpart);
        if raw.sender_localpart.is_empty() || ruma::UserId::parse(&sender).is_err() {
            return Err(RegistrationError::new(
                "sender_localpart",
                format!("{:?} does not make a valid user ID", raw.sender_localpart),
            ));
        }
        let url = match raw.url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(check_url(url)?),
        };
        let compile = |list: &Option<Vec<RawNamespace>>, kind: NamespaceKind| {
            list.iter()
                .flatten()
                .enumerate()
                .map(|(i, ns)| {
                    Namespace::compile(ns, &format!("namespaces.{}[{i}].regex", kind.field()))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let namespaces = Namespaces {
            users: compile(&raw.namespaces.users, NamespaceKind::Users)?,
            aliases: compile(&raw.namespaces.aliases, NamespaceKind::Aliases)?,
            rooms: compile(&raw.namespaces.rooms, NamespaceKind::Rooms)?,
        };
        let protocols = raw.protocols.unwrap_or_default();
        if let Some(bad) = protocols.iter().find(|p| p.is_empty() || p.contains('/')) {
            return Err(RegistrationError::new(
                "protocols",
                format!("{bad:?} is not a protocol name"),
            ));
        }
        Ok(Self {
            id: raw.id,
            url,
            as_token: raw.as_token,
            hs_token: raw.hs_token,
            sender_localpart: raw.sender_localpart,
            namespaces,
            rate_limited: raw.rate_limited.unwrap_or(true),
            protocols,
            receive_ephemeral: raw
                .receive_ephemeral
                .or(raw.msc2409_push_ephemeral)
                .or(raw.push_ephemeral)
                .unwrap_or(false),
            msc3202: raw.msc3202.unwrap_or(false),
            msc4190: raw.msc4190.unwrap_or(false),
        })
    }

    /// The appservice's own user.
    pub fn sender(&self, server_name: &str) -> String {
        format!("@{}:{server_name}", self.sender_localpart)
    }

    /// Whether `id` is in one of its `kind` namespaces (its sender counts as a user).
    pub fn is_interested(&self, kind: NamespaceKind, id: &str) -> bool {
        self.namespaces.of(kind).iter().any(|ns| ns.matches(id))
    }

    /// Whether `id` is in one of its *exclusive* `kind` namespaces.
    pub fn claims_exclusively(&self, kind: NamespaceKind, id: &str) -> bool {
        self.namespaces
            .of(kind)
            .iter()
            .any(|ns| ns.exclusive && ns.matches(id))
    }

    /// Whether the appservice may act as `user_id`: its sender, or a user in its namespaces.
    pub fn may_masquerade_as(&self, user_id: &str, server_name: &str) -> bool {
        user_id == self.sender(server_name) || self.is_interested(NamespaceKind::Users, user_id)
    }
}

fn check_token_like(value: &str, field: &str) -> Result<(), RegistrationError> {
    if value.trim().is_empty() {
        return Err(RegistrationError::new(field, "is empty"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RegistrationError::new(
            field,
            "contains white space or control characters",
        ));
    }
    Ok(())
}

/// `url` with an IP-literal or `localhost` host, without a trailing slash.
fn check_url(url: &str) -> Result<String, RegistrationError> {
    let bad = |why: &str| RegistrationError::new("url", format!("{url:?} {why}"));
    if url.starts_with("https://") {
        // A unit has no public CA to check an appservice's certificate against, and its
        // appservices run on loopback or the unit's own network (see the module header).
        return Err(bad(
            "is https://, which is not supported: use http:// with the appservice on loopback (127.0.0.1) or the unit's own network",
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("is not an http:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("has no host"));
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, port) = v6
            .split_once(']')
            .ok_or_else(|| bad("has a bad IPv6 host"))?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad("has a bad IPv6 host"))?;
        if !(port.is_empty() || port.strip_prefix(':').is_some_and(valid_port)) {
            return Err(bad("has a bad port"));
        }
        return Ok(url.trim_end_matches('/').to_owned());
    } else {
        match authority.split_once(':') {
            Some((host, port)) if valid_port(port) => host,
            Some(_) => return Err(bad("has a bad port")),
            None => authority,
        }
    };
    if host != "localhost" && host.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(bad(
            "names a host; a unit resolves no names, so use an IP address (127.0.0.1) or localhost",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn valid_port(port: &str) -> bool {
    port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// Checks registrations against each other: unique `id`, no token used twice (as either
/// token of any file), and no two exclusive namespaces of different appservices that may
/// claim one ID. The error's field names the later file's `id` or namespace.
pub fn check_set<'a>(
    registrations: impl IntoIterator<Item = &'a Registration>,
) -> Result<(), RegistrationError> {
    let mut seen: Vec<&Registration> = Vec::new();
    let mut ids = BTreeSet::new();
    let mut tokens = BTreeSet::new();
    for reg in registrations {
        if !ids.insert(reg.id.as_str()) {
            return Err(RegistrationError::new(
                "id",
                format!("{:?} is already registered", reg.id),
            ));
        }
        for (field, token) in [("as_token", &reg.as_token), ("hs_token", &reg.hs_token)] {
            if !tokens.insert(token.as_str()) {
                return Err(RegistrationError::new(
                    field,
                    "is already used by another registered appservice",
                ));
            }
        }
        for kind in [
            NamespaceKind::Users,
            NamespaceKind::Aliases,
            NamespaceKind::Rooms,
        ] {
            for (i, ns) in reg.namespaces.of(kind).iter().enumerate() {
                if !ns.exclusive {
                    continue;
                }
                let clash = seen.iter().find(|other| {
                    other
                        .namespaces
                        .of(kind)
                        .iter()
                        .any(|o| o.exclusive && o.may_overlap(ns))
                });
                if let Some(other) = clash {
                    return Err(RegistrationError::new(
                        format!("namespaces.{}[{i}].regex", kind.field()),
                        format!(
                            "{:?} may claim the same IDs as an exclusive namespace of {:?}",
                            ns.source, other.id
                        ),
                    ));
                }
            }
        }
        seen.push(reg);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IRC: &str = r##"
id: irc
url: http://127.0.0.1:9898
as_token: "as-irc-secret"
hs_token: hs-irc-secret
sender_localpart: ircbot
rate_limited: false
protocols: [irc]
de.sorunome.msc2409.push_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: '@irc_.*:unit-a\.example'
  aliases:
    - exclusive: true
      regex: "#irc_.*"
  rooms: []
"##;

    fn with(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "{from} not in the fixture");
        text.replacen(from, to, 1)
    }

    #[test]
    fn a_bridge_file_parses_with_its_flags() {
        let reg = Registration::parse(IRC, "unit-a.example").expect("parses");
        assert_eq!(reg.id, "irc");
        assert_eq!(reg.url.as_deref(), Some("http://127.0.0.1:9898"));
        assert!(!reg.rate_limited);
        assert!(reg.receive_ephemeral);
        assert_eq!(reg.protocols, ["irc"]);
        assert_eq!(reg.sender("unit-a.example"), "@ircbot:unit-a.example");
        assert!(reg.claims_exclusively(NamespaceKind::Users, "@irc_bob:unit-a.example"));
        assert!(!reg.is_interested(NamespaceKind::Users, "@bob:unit-a.example"));
        assert!(!reg.is_interested(NamespaceKind::Users, "@xirc_bob:unit-a.example"));
        assert!(reg.may_masquerade_as("@ircbot:unit-a.example", "unit-a.example"));
        assert!(reg.is_interested(NamespaceKind::Aliases, "#irc_chan:unit-a.example"));
    }

    #[test]
    fn a_null_url_is_a_send_only_appservice() {
        let reg =
            Registration::parse(&with(IRC, "http://127.0.0.1:9898", "null"), "u").expect("parses");
        assert_eq!(reg.url, None);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("as_token: \"as-irc-secret\"", "as_token: \"\"", "as_token"),
            (
                "hs_token: hs-irc-secret",
                "hs_token: as-irc-secret",
                "hs_token",
            ),
            ("http://127.0.0.1:9898", "http://bridge.lan:9898", "url"),
            ("http://127.0.0.1:9898", "ftp://127.0.0.1", "url"),
            ("http://127.0.0.1:9898", "https://127.0.0.1:9898", "url"),
            ("http://127.0.0.1:9898", "http://127.0.0.1:99999", "url"),
            (
                "sender_localpart: ircbot",
                "sender_localpart: \"\"",
                "sender_localpart",
            ),
            (
                "'@irc_.*:unit-a\\.example'",
                "'@irc_(:'",
                "namespaces.users[0].regex",
            ),
            ("id: irc", "id: \"\"", "id"),
            ("protocols: [irc]", "protocols: [\"a/b\"]", "protocols"),
        ];
        for (from, to, field) in cases {
            let err = Registration::parse(&with(IRC, from, to), "unit-a.example")
                .expect_err(&format!("{to} must be refused"));
            assert_eq!(err.field, field, "{to}: {err}");
        }
        let err = Registration::parse("id: [", "u").expect_err("not YAML");
        assert_eq!(err.field, "file");
        let err = Registration::parse("id: x\n", "u").expect_err("missing fields");
        assert_eq!(err.field, "file");
    }

    #[test]
    fn localhost_and_ipv6_urls_are_accepted() {
        for url in [
            "http://localhost:1",
            "http://[::1]:8443/",
            "http://10.0.0.5",
        ] {
            let reg = Registration::parse(&with(IRC, "http://127.0.0.1:9898", url), "u")
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(!reg.url.expect("url").ends_with('/'));
        }
    }

    #[test]
    fn sets_refuse_duplicates_and_overlapping_exclusive_namespaces() {
        let irc = Registration::parse(IRC, "unit-a.example").expect("parses");
        let other = |id: &str, users: &str, exclusive: bool| {
            let text = IRC
                .replace("id: irc", &format!("id: {id}"))
                .replace("as-irc-secret", &format!("as-{id}"))
                .replace("hs-irc-secret", &format!("hs-{id}"))
                .replace("'@irc_.*:unit-a\\.example'", &format!("'{users}'"))
                .replace("\"#irc_.*\"", &format!("\"#{id}_.*\""))
                .replace("exclusive: true", &format!("exclusive: {exclusive}"));
            Registration::parse(&text, "unit-a.example").expect("parses")
        };
        check_set([&irc, &other("mail", "@mail_.*", true)]).expect("disjoint");
        check_set([&irc, &other("irc2", "@irc_x.*", false)]).expect("not exclusive");
        let err = check_set([&irc, &other("irc2", "@irc_x.*", true)]).expect_err("overlap");
        assert_eq!(err.field, "namespaces.users[0].regex");
        let err = check_set([&irc, &other("all", ".*", true)]).expect_err("claims everything");
        assert_eq!(err.field, "namespaces.users[0].regex");
        let err = check_set([&irc, &irc]).expect_err("same id");
        assert_eq!(err.field, "id");
        let mut twin = other("twin", "@twin_.*", true);
        twin.hs_token = irc.as_token.clone();
        let err = check_set([&irc, &twin]).expect_err("token reuse");
        assert_eq!(err.field, "hs_token");
    }

    #[test]
    fn literal_prefixes_stop_at_the_first_metacharacter() {
        let ns = |re: &str| {
            Namespace::compile(
                &RawNamespace {
                    exclusive: true,
                    regex: re.to_owned(),
                },
                "f",
            )
            .expect("compiles")
            .literal_prefix()
        };
        assert_eq!(ns("@irc_.*"), "@irc_");
        assert_eq!(ns("^@a\\.b.*"), "@a.b");
        assert_eq!(ns("@ab?c"), "@a");
        assert_eq!(ns("@x\\d+"), "@x");
        assert_eq!(ns(".*"), "");
    }
}
