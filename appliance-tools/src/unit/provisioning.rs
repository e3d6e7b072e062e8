//! The declarative provisioning file (`provisioning/provisioning.schema.json`): what `setup`
//! asks for, what `setup --from FILE` applies, and what setup leaves in the data dir as the
//! record of how the unit was provisioned.
//!
//! Parsing ([`Provisioning::parse`]) only checks the shape; [`Provisioning::validate`] checks
//! every field and reports every problem at once, so an installer fixes a file in one round.
//! The field checks are also used one by one by the interactive wizard. The homeserver's TOML
//! config is rendered from the factory template `provisioning/homeserver.template.toml`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use homeserver::config::ClientTlsMode;
use ruma::{OwnedServerName, OwnedUserId};
use serde::{Deserialize, Serialize};

/// The provisioning format version this tool writes and reads.
pub const VERSION: u32 = 1;

/// Default client listen address: every interface, the HTTPS port (clients then need no port
/// in the URL).
pub const DEFAULT_CLIENT_LISTEN: &str = "0.0.0.0:443";
/// Default federation listen address: every interface, the usual Matrix federation port.
pub const DEFAULT_FEDERATION_LISTEN: &str = "0.0.0.0:8448";
/// Default first admin name.
pub const DEFAULT_ADMIN: &str = "admin";

/// The factory-default homeserver config, with `{{…}}` placeholders.
const CONFIG_TEMPLATE: &str = include_str!("../../../provisioning/homeserver.template.toml");

/// The file, exactly as written in JSON. Unknown keys are errors, so a typo is caught.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provisioning {
    /// Editors' schema hint; ignored.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Format version, must be [`VERSION`].
    pub version: u32,
    /// The unit's Matrix server name (user IDs end in it); may carry a port.
    pub server_name: String,
    /// Where the unit listens and how peers reach it.
    pub network: Network,
    /// The first admin account.
    pub admin: Admin,
}

/// The `network` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Client-server API listen address, `ip:port`.
    #[serde(default = "default_client_listen")]
    pub client_listen: String,
    /// Federation listen address, `ip:port`.
    #[serde(default = "default_federation_listen")]
    pub federation_listen: String,
    /// `host:port` addresses peer units use to reach this one (they go on the peer card).
    pub federation_endpoints: Vec<String>,
    /// The URL users' clients reach the unit at; by default `https://` + the first public
    /// name (with the client port unless it is 443). With TLS off: `http://` + the client
    /// listen address, or the server name's host on the client port when that address is a
    /// wildcard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
    /// DNS names and IP addresses users type to reach the unit; the client certificate covers
    /// every one. Default: the host of `public_base_url`, else the server name's host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_names: Vec<String>,
    /// Where the client port's certificate comes from.
    #[serde(default)]
    pub client_tls: ClientTls,
    /// With `client_tls: imported`: the certificate files, relative to this file. Setup
    /// checks and copies them; it does not record this key in the data dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<CertificateFiles>,
    /// A plain-HTTP listener (`ip:port`, usually port 80) that serves only the unit CA and a
    /// page with its fingerprint, and redirects everything else to HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_http_listen: Option<String>,
    /// With `client_tls: off` on an address other than loopback: accept that passwords and
    /// messages cross the network in clear.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_plain_http: bool,
}

/// `network.client_tls`: the homeserver's `listen.tls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTls {
    /// HTTPS with a certificate the homeserver issues from the unit CA and renews.
    #[default]
    UnitCa,
    /// HTTPS with a certificate from the organisation's PKI (`client_certificate`).
    Imported,
    /// Plain HTTP (loopback, or with `insecure_plain_http`).
    Off,
}

impl ClientTls {
    /// The homeserver's config value.
    pub fn mode(self) -> ClientTlsMode {
        match self {
            ClientTls::UnitCa => ClientTlsMode::UnitCa,
            ClientTls::Imported => ClientTlsMode::Imported,
            ClientTls::Off => ClientTlsMode::Off,
        }
    }

    /// Parses the value of `--client-tls`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "unit-ca" => Ok(ClientTls::UnitCa),
            "imported" => Ok(ClientTls::Imported),
            "off" => Ok(ClientTls::Off),
            other => Err(format!("{other:?} is not one of unit-ca, imported, off")),
        }
    }
}

/// `network.client_certificate`: an organisation's certificate for the client port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate (PEM), leaf first, then any intermediates.
    pub certificate: String,
    /// Its private key (PEM, unencrypted).
    pub key: String,
    /// More of the chain (PEM): intermediates, optionally ending with the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}

fn default_client_listen() -> String {
    DEFAULT_CLIENT_LISTEN.to_owned()
}
fn default_federation_listen() -> String {
    DEFAULT_FEDERATION_LISTEN.to_owned()
}

/// The `admin` section. The password itself is never in the file: it is typed at the console,
/// passed with `--admin-password-file`, or read from the file `password_file` names (for an
/// installer's provisioning stick; setup does not copy that key into the data dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// The first admin's user name (`admin`, or a full `@admin:server`).
    pub user: String,
    /// A file holding the password on its first line, relative to the provisioning file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
}

/// A provisioning file whose every field was checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server name.
    pub server_name: OwnedServerName,
    /// Client listen address.
    pub client_listen: SocketAddr,
    /// Federation listen address.
    pub federation_listen: SocketAddr,
    /// Endpoints peers use, `host:port`.
    pub federation_endpoints: Vec<String>,
    /// Where users' clients reach the unit (`/.well-known/matrix/client`).
    pub public_base_url: String,
    /// TLS on the client port.
    pub client_tls: ClientTls,
    /// The names the client certificate covers (empty with TLS off).
    pub public_names: Vec<String>,
    /// The certificate files to import (only with [`ClientTls::Imported`]), as given.
    pub client_certificate: Option<CertificateFiles>,
    /// The plain-HTTP listener serving the unit CA.
    pub ca_http_listen: Option<SocketAddr>,
    /// Plain HTTP off loopback accepted.
    pub insecure_plain_http: bool,
    /// The first admin.
    pub admin: OwnedUserId,
}

impl Provisioning {
    /// Parses the JSON text (shape only).
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|err| {
            format!(
                "not a valid provisioning file (line {}, column {}): {err}",
                err.line(),
                err.column()
            )
        })
    }

    /// Checks every field; on failure returns one line per problem, naming the field.
    pub fn validate(&self) -> Result<Plan, Vec<String>> {
        let mut problems = Vec::new();
        if self.version != VERSION {
            problems.push(format!(
                "version: {} is not supported; this tool reads version {VERSION}",
                self.version
            ));
        }
        let server_name = note(&mut problems, "server_name", server_name(&self.server_name));
        let client = note(
            &mut problems,
            "network.client_listen",
            listen_addr(&self.network.client_listen),
        );
        let federation = note(
            &mut problems,
            "network.federation_listen",
            listen_addr(&self.network.federation_listen),
        );
        if let (Some(client), Some(federation)) = (client, federation)
            && overlaps(client, federation)
        {
            problems.push(format!(
                "network.federation_listen: {federation} collides with client_listen {client}; \
                 use another port"
            ));
        }
        if self.network.federation_endpoints.is_empty() {
            problems.push(
                "network.federation_endpoints: list at least one host:port that peer units can \
                 reach this unit at"
                    .to_owned(),
            );
        }
        let mut endpoints = Vec::new();
        for (index, raw) in self.network.federation_endpoints.iter().enumerate() {
            if let Some(endpoint) = note(
                &mut problems,
                &format!("network.federation_endpoints[{index}]"),
                endpoint(raw),
            ) {
                endpoints.push(endpoint);
            }
        }
        let admin = server_name.as_ref().and_then(|name| {
            note(
                &mut problems,
                "admin.user",
                admin_user(name, &self.admin.user),
            )
        });
        let public_base_url = match &self.network.public_base_url {
            Some(raw) => note(
                &mut problems,
                "network.public_base_url",
                public_base_url(raw),
            ),
            None => None,
        };
        let tls = self.network.client_tls;
        let mut names = Vec::new();
        for (index, raw) in self.network.public_names.iter().enumerate() {
            if let Some(name) = note(
                &mut problems,
                &format!("network.public_names[{index}]"),
                public_name(raw),
            ) && !names.contains(&name)
            {
                names.push(name);
            }
        }
        let ca_http = match &self.network.ca_http_listen {
            Some(raw) => note(&mut problems, "network.ca_http_listen", listen_addr(raw)),
            None => None,
        };
        if let Some(ca_http) = ca_http {
            for (other, name) in [(client, "client_listen"), (federation, "federation_listen")] {
                if let Some(other) = other
                    && overlaps(ca_http, other)
                {
                    problems.push(format!(
                        "network.ca_http_listen: {ca_http} collides with {name} {other}; use                          another port"
                    ));
                }
            }
        }
        match (tls, &self.network.client_certificate) {
            (ClientTls::Imported, None) => problems.push(
                "network.client_certificate: client_tls \"imported\" needs the certificate                  and key files"
                    .to_owned(),
            ),
            (ClientTls::UnitCa | ClientTls::Off, Some(_)) => problems.push(
                "network.client_certificate: only used with client_tls \"imported\"".to_owned(),
            ),
            _ => {}
        }
        if tls == ClientTls::Off {
            if let Some(client) = client
                && !client.ip().is_loopback()
                && !self.network.insecure_plain_http
            {
                problems.push(format!(
                    "network.client_tls: \"off\" on {client} would carry passwords, access                      tokens and messages in clear on the network; use \"unit-ca\", or set                      insecure_plain_http: true to accept that"
                ));
            }
            if ca_http.is_some() {
                problems.push(
                    "network.ca_http_listen: serves the unit CA for HTTPS clients; it needs \
                     client_tls \"unit-ca\" or \"imported\""
                        .to_owned(),
                );
            }
        } else {
            if self.network.insecure_plain_http {
                problems.push(
                    "network.insecure_plain_http: only meaningful with client_tls \"off\""
                        .to_owned(),
                );
            }
            if let Some(url) = &public_base_url
                && !url.starts_with("https://")
            {
                problems.push(format!(
                    "network.public_base_url: {url:?} must start with https:// when the client \
                     port serves TLS"
                ));
            }
        }
        match (server_name, client, federation, admin) {
            (Some(server_name), Some(client_listen), Some(federation_listen), Some(admin))
                if problems.is_empty() =>
            {
                let (public_base_url, public_names) = match tls {
                    ClientTls::Off => (
                        public_base_url.unwrap_or_else(|| {
                            default_public_base_url(&server_name, client_listen)
                        }),
                        names,
                    ),
                    ClientTls::UnitCa | ClientTls::Imported => {
                        if names.is_empty() {
                            let host = match &public_base_url {
                                Some(url) => url_host(url).to_owned(),
                                None => server_name.host().to_owned(),
                            };
                            names.push(
                                public_name(&host)
                                    .map_err(|err| vec![format!("network.public_names: {err}")])?,
                            );
                        }
                        let url = public_base_url
                            .unwrap_or_else(|| default_https_url(&names[0], client_listen.port()));
                        (url, names)
                    }
                };
                Ok(Plan {
                    server_name,
                    client_listen,
                    federation_listen,
                    federation_endpoints: endpoints,
                    public_base_url,
                    client_tls: tls,
                    public_names,
                    client_certificate: self.network.client_certificate.clone(),
                    ca_http_listen: ca_http,
                    insecure_plain_http: self.network.insecure_plain_http,
                    admin,
                })
            }
            _ => Err(problems),
        }
    }
}

impl Plan {
    /// The provisioning file that records this plan (as setup writes it into the data dir).
    pub fn to_file(&self) -> Provisioning {
        Provisioning {
            schema: None,
            version: VERSION,
            server_name: self.server_name.to_string(),
            network: Network {
                client_listen: self.client_listen.to_string(),
                federation_listen: self.federation_listen.to_string(),
                federation_endpoints: self.federation_endpoints.clone(),
                public_base_url: Some(self.public_base_url.clone()),
                public_names: self.public_names.clone(),
                client_tls: self.client_tls,
                client_certificate: None,
                ca_http_listen: self.ca_http_listen.map(|addr| addr.to_string()),
                insecure_plain_http: self.insecure_plain_http,
            },
            admin: Admin {
                user: self.admin.localpart().to_owned(),
                password_file: None,
            },
        }
    }

    /// The homeserver config for this plan, with the unit living in `data_dir` (absolute).
    pub fn render_config(&self, data_dir: &Path) -> String {
        let endpoints: Vec<String> = self
            .federation_endpoints
            .iter()
            .map(|endpoint| toml_string(endpoint))
            .collect();
        CONFIG_TEMPLATE
            .replace("{{server_name}}", &toml_string(self.server_name.as_str()))
            .replace("{{data_dir}}", &toml_string(&data_dir.to_string_lossy()))
            .replace(
                "{{client_listen}}",
                &toml_string(&self.client_listen.to_string()),
            )
            .replace(
                "{{federation_listen}}",
                &toml_string(&self.federation_listen.to_string()),
            )
            .replace(
                "{{federation_endpoints}}",
                &format!("[{}]", endpoints.join(", ")),
            )
            .replace("{{public_base_url}}", &toml_string(&self.public_base_url))
            .replace(
                "{{client_tls}}",
                &toml_string(self.client_tls.mode().as_str()),
            )
            .replace(
                "{{public_names}}",
                &format!(
                    "[{}]",
                    self.public_names
                        .iter()
                        .map(|name| toml_string(name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .replace(
                "{{ca_http}}",
                &match self.ca_http_listen {
                    Some(addr) => format!("ca_http = {}", toml_string(&addr.to_string())),
                    None => "# ca_http = \"0.0.0.0:80\"".to_owned(),
                },
            )
            .replace(
                "{{insecure_plain_http}}",
                if self.insecure_plain_http {
                    "insecure_plain_http = true"
                } else {
                    "insecure_plain_http = false"
                },
            )
    }
}

/// Replaces the top-level `data_dir = …` line of a config (restore moves a unit to another
/// directory). Comments and every other line stay as they were.
pub fn replace_data_dir(config: &str, data_dir: &Path) -> Result<String, String> {
    let mut replaced = false;
    let mut in_table = false;
    let lines: Vec<String> = config
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') {
                in_table = true;
            }
            let key = trimmed.split('=').next().unwrap_or_default().trim();
            if !in_table && !replaced && key == "data_dir" {
                replaced = true;
                format!("data_dir = {}", toml_string(&data_dir.to_string_lossy()))
            } else {
                line.to_owned()
            }
        })
        .collect();
    if replaced {
        Ok(lines.join("\n") + "\n")
    } else {
        Err("the config has no top-level data_dir line".to_owned())
    }
}

/// Sets `key = "value"` in the config's `[listen]` table: the existing `key = …` line is
/// replaced, or a new line is added at the end of the table. Comments and every other line
/// stay as they were.
pub fn set_listen_key(config: &str, key: &str, value: &str) -> Result<String, String> {
    let mut lines: Vec<String> = config.lines().map(str::to_owned).collect();
    let start = lines
        .iter()
        .position(|line| line.trim() == "[listen]")
        .ok_or("the config has no [listen] table")?;
    let end = lines[start + 1..]
        .iter()
        .position(|line| line.trim_start().starts_with('['))
        .map_or(lines.len(), |at| start + 1 + at);
    let new_line = format!("{key} = {}", toml_string(value));
    let existing = (start + 1..end).find(|&at| {
        let line = lines[at].trim_start();
        !line.starts_with('#') && line.split('=').next().unwrap_or_default().trim() == key
    });
    match existing {
        Some(at) => lines[at] = new_line,
        None => {
            // After the table's last non-blank line, so a blank line before the next table
            // stays.
            let last = (start..end)
                .rev()
                .find(|&at| !lines[at].trim().is_empty())
                .unwrap_or(start);
            lines.insert(last + 1, new_line);
        }
    }
    Ok(lines.join("\n") + "\n")
}

/// Quotes a TOML basic string.
fn toml_string(raw: &str) -> String {
    let mut out = String::from("\"");
    for c in raw.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Records a field's problem, prefixed with the field name; passes a valid value through.
fn note<T>(problems: &mut Vec<String>, field: &str, result: Result<T, String>) -> Option<T> {
    result
        .map_err(|reason| problems.push(format!("{field}: {reason}")))
        .ok()
}

/// Whether two listen addresses would claim the same port.
pub fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Checks a server name.
pub fn server_name(raw: &str) -> Result<OwnedServerName, String> {
    let raw = raw.trim();
    let name = OwnedServerName::try_from(raw).map_err(|_| {
        format!(
            "{raw:?} is not a valid server name: use a host name such as unit-a.example \
             (letters, digits, '-' and '.'), optionally with :port"
        )
    })?;
    if name.as_str().len() > 230 {
        return Err("a server name this long leaves no room for user names".to_owned());
    }
    Ok(name)
}

/// Checks a listen address (`ip:port`).
pub fn listen_addr(raw: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = raw.trim().parse().map_err(|_| {
        format!("{raw:?} is not an ip:port address (for example 0.0.0.0:8008 or [::]:8008)")
    })?;
    if addr.port() == 0 {
        return Err(format!("{raw:?} needs a port other than 0"));
    }
    Ok(addr)
}

/// Checks a `host:port` endpoint peers can reach (a host name or an IP address).
pub fn endpoint(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    let bad =
        || format!("{raw:?} is not host:port (for example 10.0.0.5:8448 or unit-a.example:8448)");
    if let Ok(addr) = raw.parse::<SocketAddr>() {
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(format!(
                "{raw:?} is not an address peers can reach; give this unit's own address"
            ));
        }
        return Ok(addr.to_string());
    }
    let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host_ok = host.parse::<IpAddr>().is_err() && homeserver::config::is_dns_name(host);
    if !host_ok || port == 0 {
        return Err(bad());
    }
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

/// Checks the first admin's name against the server name.
pub fn admin_user(server_name: &OwnedServerName, raw: &str) -> Result<OwnedUserId, String> {
    homeserver::service::admin::parse_new_user(server_name, raw).map_err(|err| error_message(&err))
}

/// The human part of a homeserver error.
fn error_message(err: &homeserver::error::Error) -> String {
    match err {
        homeserver::error::Error::Matrix { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The endpoint peers would use by default: the server name's host on the federation port.
pub fn default_endpoint(server_name: &OwnedServerName, federation: SocketAddr) -> String {
    format!("{}:{}", server_name.host(), federation.port())
}

/// Checks the URL users' clients reach the unit at (the homeserver's own rule).
pub fn public_base_url(raw: &str) -> Result<String, String> {
    homeserver::config::check_public_base_url(raw.trim())
}

/// Checks one name users type (`network.public_names`, `--public-name`): a DNS name or an IP
/// address, the homeserver's own rule.
pub fn public_name(raw: &str) -> Result<String, String> {
    homeserver::config::check_public_name(raw)
}

/// The host of a checked URL (`https://[fd00::5]:8448` → `fd00::5`).
pub fn url_host(url: &str) -> &str {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.trim_end_matches('/');
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// `https://NAME` (IPv6 in brackets), with `:PORT` unless the port is 443.
pub fn default_https_url(name: &str, port: u16) -> String {
    let host = if name.contains(':') {
        format!("[{name}]")
    } else {
        name.to_owned()
    };
    if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The public base URL with TLS off when none is given: the client listen address when it
/// is a specific one, else the server name's host (which users' devices resolve on the
/// unit's network) on the client port.
pub fn default_public_base_url(server_name: &OwnedServerName, client: SocketAddr) -> String {
    if client.ip().is_unspecified() {
        format!("http://{}:{}", server_name.host(), client.port())
    } else {
        format!("http://{client}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Provisioning {
        Provisioning::parse(include_str!(
            "../../../provisioning/provisioning.example.json"
        ))
        .expect("the example parses")
    }

    #[test]
    fn the_example_file_is_valid() {
        let plan = example().validate().expect("the example validates");
        assert_eq!(plan.admin.localpart(), "admin");
        // And it round-trips through what setup writes.
        assert!(plan.to_file().validate().is_ok());
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let mut file = example();
        file.version = 7;
        file.server_name = "Not A Name".to_owned();
        file.network.client_listen = "8008".to_owned();
        file.network.federation_endpoints = vec!["nowhere".to_owned()];
        let problems = file.validate().expect_err("invalid");
        for field in [
            "version",
            "server_name",
            "client_listen",
            "federation_endpoints[0]",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(field)),
                "{field} not reported in {problems:?}"
            );
        }
    }

    #[test]
    fn colliding_ports_are_refused() {
        let mut file = example();
        file.network.federation_listen = file.network.client_listen.clone();
        assert!(file.validate().is_err());
    }

    #[test]
    fn tls_is_the_default_and_plain_http_needs_loopback_or_the_insecure_flag() {
        let mut file = example();
        file.network.public_base_url = None;
        file.network.public_names = vec!["[fd00::5]".to_owned(), "Chat.Unit-A.example".to_owned()];
        file.network.client_listen = "0.0.0.0:8443".to_owned();
        let plan = file.validate().expect("valid");
        assert_eq!(plan.client_tls, ClientTls::UnitCa);
        assert_eq!(plan.public_names, ["fd00::5", "chat.unit-a.example"]);
        assert_eq!(plan.public_base_url, "https://[fd00::5]:8443");
        let config = plan.render_config(Path::new("/data/outpost"));
        assert!(config.contains("tls = \"unit-ca\"\n"), "{config}");
        assert!(config.contains("ca_http = \"0.0.0.0:80\"\n"), "{config}");

        // Without names: the host of the URL, else the server name.
        let mut file = example();
        file.network.public_names.clear();
        let plan = file.validate().expect("valid");
        assert_eq!(plan.public_names, ["chat.unit-a.example"]);
        file.network.public_base_url = None;
        file.network.client_listen = "0.0.0.0:443".to_owned();
        let plan = file.validate().expect("valid");
        assert_eq!(plan.public_base_url, "https://unit-a.example");

        let mut file = example();
        file.network.client_tls = ClientTls::Off;
        file.network.ca_http_listen = None;
        file.network.public_base_url = Some("http://chat.unit-a.example".to_owned());
        let problems = file.validate().expect_err("plain HTTP on 0.0.0.0");
        assert!(problems[0].contains("insecure_plain_http"), "{problems:?}");
        file.network.insecure_plain_http = true;
        file.validate().expect("accepted explicitly");
        file.network.insecure_plain_http = false;
        file.network.client_listen = "127.0.0.1:8008".to_owned();
        file.validate().expect("loopback is fine");

        let mut file = example();
        file.network.public_base_url = Some("http://chat.unit-a.example".to_owned());
        assert!(file.validate().is_err(), "http:// URL with TLS on");
        let mut file = example();
        file.network.client_tls = ClientTls::Imported;
        assert!(file.validate().is_err(), "imported without files");
    }

    #[test]
    fn a_listen_key_is_replaced_or_added_in_its_table() {
        let config = "[listen]\nclient = \"x\"\ntls = \"unit-ca\"\n\n[federation]\ntls = 1\n";
        assert_eq!(
            set_listen_key(config, "tls", "imported").expect("set"),
            "[listen]\nclient = \"x\"\ntls = \"imported\"\n\n[federation]\ntls = 1\n"
        );
        let config = "[listen]\nclient = \"x\"\n# tls = \"off\"\n\n[log]\n";
        assert_eq!(
            set_listen_key(config, "tls", "imported").expect("set"),
            "[listen]\nclient = \"x\"\n# tls = \"off\"\ntls = \"imported\"\n\n[log]\n"
        );
        assert!(set_listen_key("a = 1\n", "tls", "off").is_err());
    }

    #[test]
    fn data_dir_is_replaced_only_at_top_level() {
        let config = "# c\nserver_name = \"a\"\ndata_dir = \"/old\"\n[x]\ndata_dir = 1\n";
        let new = replace_data_dir(config, Path::new("/new")).expect("replaced");
        assert_eq!(
            new,
            "# c\nserver_name = \"a\"\ndata_dir = \"/new\"\n[x]\ndata_dir = 1\n"
        );
    }
}
