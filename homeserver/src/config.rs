//! The homeserver's configuration: the TOML file format, the `dev` defaults, and validation.
//!
//! Parsing turns text into [`FileConfig`]; [`Config::from_file`] and [`Config::dev`] resolve it
//! into a [`Config`] whose every field is checked, so the rest of the server never sees an
//! invalid value. Every key is documented in `provisioning/homeserver.example.toml`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ruma::OwnedServerName;
use serde::Deserialize;

/// The file format, exactly as written in TOML. Unknown keys are an error so a typo in a
/// sealed box's config is caught at start rather than silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server_name: String,
    data_dir: PathBuf,
    #[serde(default)]
    listen: ListenSection,
    #[serde(default)]
    registration: RegistrationConfig,
    #[serde(default)]
    rate_limit: RateLimitConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    connections: ConnectionsConfig,
    #[serde(default)]
    storage: StorageConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    admin: AdminConfig,
    #[serde(default)]
    federation: FederationConfig,
    #[serde(default)]
    media: MediaConfig,
    #[serde(default)]
    appservices: AppservicesConfig,
    #[serde(default)]
    auth: AuthConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenSection {
    #[serde(default = "default_client_listen")]
    client: SocketAddr,
    /// The URL users' clients reach the client API at (`https://chat.unit-a.example`).
    #[serde(default)]
    public_base_url: Option<String>,
    /// DNS names and IP addresses users type to reach the client API; the client certificate
    /// must cover every one.
    #[serde(default)]
    public_names: Vec<String>,
    /// Where the client listener's certificate comes from, or `off` for plain HTTP.
    #[serde(default)]
    tls: ClientTlsMode,
    /// Allows a plain-HTTP client listener on a non-loopback address.
    #[serde(default)]
    insecure_plain_http: bool,
    /// A plain-HTTP listener that serves only the unit CA and redirects the rest to HTTPS.
    #[serde(default)]
    ca_http: Option<SocketAddr>,
}

impl Default for ListenSection {
    fn default() -> Self {
        Self {
            client: default_client_listen(),
            public_base_url: None,
            public_names: Vec::new(),
            tls: ClientTlsMode::Off,
            insecure_plain_http: false,
            ca_http: None,
        }
    }
}

/// Where the client listener's TLS certificate comes from (`listen.tls`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientTlsMode {
    /// Plain HTTP: only on a loopback address, unless `insecure_plain_http` says otherwise.
    #[default]
    Off,
    /// A leaf issued by the unit's own CA for `public_names`, renewed by the server itself.
    UnitCa,
    /// A certificate from the organisation's PKI, written by `appliance tls client import`.
    Imported,
}

impl ClientTlsMode {
    /// The value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTlsMode::Off => "off",
            ClientTlsMode::UnitCa => "unit-ca",
            ClientTlsMode::Imported => "imported",
        }
    }
}

/// Checks one `listen.public_names` entry (an IP address, or a DNS name, a leading `*.`
/// wildcard allowed) with the one parser the appliance uses too. Returns it normalised
/// (lower-cased), or why it is refused.
pub fn check_public_name(raw: &str) -> Result<String, String> {
    parse_public_name(raw).map(|name| name.to_string())
}

/// A name users type to reach the unit (`listen.public_names`): a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicName {
    /// A DNS name, lowercased, without a trailing dot.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl std::fmt::Display for PublicName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicName::Dns(name) => f.write_str(name),
            PublicName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Whether `name` is a DNS host name: at most 253 characters of dot-separated labels, each 1 to
/// 63 letters, digits and `-`, not starting or ending with `-`. One rule for every name the
/// configuration and `appliance` take (public names, federation endpoints).
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Checks one public name: an IP address (IPv6 with or without brackets) or a DNS name of
/// letters, digits and `-` in dot-separated labels. A leading `*.` label is accepted (the
/// config allows a wildcard name, meaning "a certificate for the whole domain"); only the same
/// wildcard in a certificate covers it.
pub fn parse_public_name(raw: &str) -> Result<PublicName, String> {
    let trimmed = raw.trim();
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(trimmed);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        if ip.is_unspecified() {
            return Err(format!(
                "{raw:?} is the wildcard address; give the address users type"
            ));
        }
        return Ok(PublicName::Ip(ip));
    }
    let name = trimmed
        .strip_suffix('.')
        .unwrap_or(trimmed)
        .to_ascii_lowercase();
    let labels = name.strip_prefix("*.").unwrap_or(&name);
    if name.len() > 253 || !is_dns_name(labels) {
        return Err(format!(
            "{raw:?} is neither a DNS name (such as chat.unit-a.example) nor an IP address"
        ));
    }
    Ok(PublicName::Dns(name))
}

/// The host of a checked public base URL (`https://[fd00::5]:8448` → `fd00::5`).
fn url_host(url: &str) -> &str {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
}

/// Checks a public base URL (`listen.public_base_url`; `appliance setup` checks with it too):
/// `http` or `https`, a host, no path, query, fragment or credentials, since clients append
/// `/_matrix/...` to it. Returns it without a trailing slash, or why it is refused.
pub fn check_public_base_url(raw: &str) -> Result<String, String> {
    let invalid = |why: &str| format!("{raw:?} {why} (e.g. \"https://chat.unit-a.example\")");
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .ok_or_else(|| invalid("must start with https:// or http://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.starts_with(':') {
        return Err(invalid("names no host"));
    }
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
        return Err(invalid("must be scheme://host[:port] only, with no path"));
    }
    Ok(raw.strip_suffix('/').unwrap_or(raw).to_owned())
}

fn default_client_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8008))
}

/// Who may create accounts through the client API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Open registration through `/register` (UIA `m.login.dummy`). Off by default in config mode:
    /// admins create users at the console.
    #[serde(default)]
    pub enabled: bool,
    /// Registration tokens; when non-empty, registration requires `m.login.registration_token`
    /// with one of them (even if `enabled` is false).
    #[serde(default)]
    pub tokens: Vec<String>,
}

/// How users sign in (`[auth]`): the OAuth 2.0 server is always on; the legacy password API
/// can be switched off so that every client signs in through the unit's own pages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether `/login` offers and accepts `m.login.password` and `/register` creates
    /// accounts (application services keep both either way).
    #[serde(default = "yes")]
    pub legacy_login: bool,
    /// How long an approval given on the account page (the `m.oauth` UIA stage, e.g. a
    /// cross-signing reset) waits for the client to retry: ten minutes, as other servers allow.
    #[serde(default = "default_approval_secs")]
    pub approval_secs: u64,
}

fn default_approval_secs() -> u64 {
    600
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            legacy_login: true,
            approval_secs: default_approval_secs(),
        }
    }
}

/// Request rate limits, applied per user (or per IP address before login).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Whether limits apply at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Sustained requests per second.
    #[serde(default = "default_per_second")]
    pub per_second: f64,
    /// Requests allowed in a burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn yes() -> bool {
    true
}
fn default_per_second() -> f64 {
    50.0
}
fn default_burst() -> u32 {
    200
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: default_per_second(),
            burst: default_burst(),
        }
    }
}

/// Size limits on what clients send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes; larger bodies get `M_TOO_LARGE`.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest content of one account data item (one type, globally or in one room), in
    /// bytes of JSON; larger gets 413 `M_TOO_LARGE`.
    #[serde(default = "default_account_data_max")]
    pub account_data_max_bytes: usize,
    /// Total account data one user may store, in bytes of JSON over all types and rooms; a
    /// write past it gets 413 `M_TOO_LARGE`.
    #[serde(default = "default_account_data_quota")]
    pub account_data_quota_bytes: u64,
    /// Longest delay a client may give a delayed event (MSC4140), in ms; longer gets 403
    /// `M_FORBIDDEN`. Advertised as `max_delay_ms` in the delayed-events capability.
    #[serde(default = "default_delayed_max_delay")]
    pub delayed_event_max_delay_ms: u64,
    /// How many delayed events one user may have scheduled at once; one more gets 429 until
    /// the soonest is due. `0` turns delayed events off (403). Advertised as `max_scheduled`.
    #[serde(default = "default_delayed_max_scheduled")]
    pub delayed_events_per_user: u64,
}

fn default_max_body() -> usize {
    1024 * 1024
}
fn default_account_data_max() -> usize {
    64 * 1024
}
fn default_account_data_quota() -> u64 {
    1024 * 1024
}
fn default_delayed_max_delay() -> u64 {
    7 * 24 * 60 * 60 * 1000
}
fn default_delayed_max_scheduled() -> u64 {
    100
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            account_data_max_bytes: default_account_data_max(),
            account_data_quota_bytes: default_account_data_quota(),
            delayed_event_max_delay_ms: default_delayed_max_delay(),
            delayed_events_per_user: default_delayed_max_scheduled(),
        }
    }
}

/// How many connections the listeners hold and for how long, so idle or slow connections
/// cannot take the unit offline. Caps are clamped at start to what the process's file
/// descriptor limit allows (see `api/conn.rs`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Seconds a connection has to deliver a complete request head, counted from its accept or
    /// from the first byte after an idle keep-alive pause (slowloris defence).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds a keep-alive connection may sit between requests before it is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Client listener: connections not in a long poll.
    #[serde(default = "default_client_max")]
    pub client_max: usize,
    /// Client listener: connections not in a long poll from one source address.
    #[serde(default = "default_client_max_per_address")]
    pub client_max_per_address: usize,
    /// Client listener: requests waiting in a long poll (`/sync`, sliding sync) at once, counted
    /// apart from the caps above.
    #[serde(default = "default_long_poll_max")]
    pub long_poll_max: usize,
    /// Federation listener: connections.
    #[serde(default = "default_federation_max")]
    pub federation_max: usize,
    /// Federation listener: connections from one source address.
    #[serde(default = "default_federation_max_per_address")]
    pub federation_max_per_address: usize,
    /// Seconds a request body may take before [`body_min_rate`](Self::body_min_rate) applies:
    /// past them, a body that has averaged less than that rate since the request began is cut
    /// (408, and the connection closed). Defends against slow-body (R.U.D.Y.) attacks on both
    /// listeners.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// Bytes per second a request body must average once `body_timeout_secs` have passed.
    #[serde(default = "default_body_min_rate")]
    pub body_min_rate: u64,
}

fn default_header_timeout() -> u64 {
    10
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_client_max() -> usize {
    4096
}
fn default_client_max_per_address() -> usize {
    256
}
fn default_long_poll_max() -> usize {
    4096
}
fn default_federation_max() -> usize {
    256
}
fn default_federation_max_per_address() -> usize {
    64
}
fn default_body_timeout() -> u64 {
    30
}
fn default_body_min_rate() -> u64 {
    1024
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            header_timeout_secs: default_header_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            client_max: default_client_max(),
            client_max_per_address: default_client_max_per_address(),
            long_poll_max: default_long_poll_max(),
            federation_max: default_federation_max(),
            federation_max_per_address: default_federation_max_per_address(),
            body_timeout_secs: default_body_timeout(),
            body_min_rate: default_body_min_rate(),
        }
    }
}

/// Database tuning and the data partition's free-space policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Seconds without writes after which the write-ahead log is truncated to zero bytes (a
    /// TRUNCATE checkpoint, which waits for the writer, so it only runs when writes pause).
    #[serde(default = "default_checkpoint")]
    pub checkpoint_interval_secs: u64,
    /// Milliseconds between passive checkpoints while writes keep coming. A passive checkpoint
    /// runs on its own connection and never stalls the writer; the log holds at most about
    /// this long's worth of commits.
    #[serde(default = "default_passive_checkpoint")]
    pub passive_checkpoint_ms: u64,
    /// Number of read-only connections in the read pool.
    #[serde(default = "default_readers")]
    pub read_connections: usize,
    /// Free bytes on the data partition below which the unit turns read-only: writes get 403
    /// `M_RESOURCE_LIMIT_EXCEEDED`, reads and `/sync` keep working, and writes resume by
    /// themselves once space is freed. 0 turns the watermark off. Unset: 256 MiB, or a tenth
    /// of the partition when that is smaller (a small data partition, like the test image's
    /// 256 MiB one, would otherwise start read-only).
    #[serde(default)]
    pub min_free_bytes: Option<u64>,
    /// Size of `<data_dir>/.space-reserve`, a file kept only to be deleted when the disk fills
    /// anyway, so a checkpoint can still move the log into the database. 0: no reserve file.
    /// Unset: 64 MiB, or a fortieth of the partition when that is smaller.
    #[serde(default)]
    pub reserve_bytes: Option<u64>,
    /// The `admin_contact` URI sent with `M_RESOURCE_LIMIT_EXCEEDED` (the spec requires one),
    /// e.g. `mailto:it@example.org`. Defaults to `mailto:admin@<server_name host>`.
    #[serde(default)]
    pub admin_contact: Option<String>,
}

fn default_checkpoint() -> u64 {
    5
}
fn default_passive_checkpoint() -> u64 {
    250
}
fn default_readers() -> usize {
    4
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_secs: default_checkpoint(),
            passive_checkpoint_ms: default_passive_checkpoint(),
            read_connections: default_readers(),
            min_free_bytes: None,
            reserve_bytes: None,
            admin_contact: None,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter directive such as `info` or `homeserver=debug,info`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_level() -> String {
    "info".to_owned()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
        }
    }
}

/// The local admin API: a Unix socket `<data_dir>/admin.sock`, mode 0660, through which the
/// `appliance` CLI manages the running server. It never listens on a network port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Group that owns the socket, so its members can administer the unit without being root.
    /// Unset: the server process's own group.
    #[serde(default)]
    pub socket_group: Option<String>,
}

/// The resolved, validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// This unit's Matrix server name (may carry a port).
    pub server_name: OwnedServerName,
    /// Directory holding the database, keys and media.
    pub data_dir: PathBuf,
    /// Client-server API listener.
    pub client_listen: SocketAddr,
    /// Where clients reach the client API, for `/.well-known/matrix/client` and anywhere the
    /// server names itself to clients: `listen.public_base_url`, or `http://<listen address>`
    /// when that address is a specific one. `None` when neither says it (a wildcard listener
    /// and no configured URL): the bind address is never a URL anyone can use.
    pub public_base_url: Option<String>,
    /// TLS on the client listener (`listen.tls`).
    pub client_tls: ClientTlsMode,
    /// The names the client certificate must cover: `listen.public_names`, or the host of the
    /// public base URL. Empty only with TLS off.
    pub public_names: Vec<String>,
    /// The plain-HTTP listener serving the unit CA (`listen.ca_http`), only with TLS on.
    pub ca_http: Option<SocketAddr>,
    /// Registration policy.
    pub registration: RegistrationConfig,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
    /// Size limits.
    pub limits: LimitsConfig,
    /// Connection timeouts and caps.
    pub connections: ConnectionsConfig,
    /// Database tuning.
    pub storage: StorageConfig,
    /// Logging.
    pub log: LogConfig,
    /// The local admin socket.
    pub admin: AdminConfig,
    /// Closed federation with allow-listed peers.
    pub federation: FederationConfig,
    /// The media repository's limits.
    pub media: MediaConfig,
    /// How the server calls application services.
    pub appservices: AppservicesConfig,
    /// How users sign in (`[auth]`).
    pub auth: AuthConfig,
    /// True in `homeserver dev`: prints a newcomer's hint at start.
    pub dev_mode: bool,
}

/// How the server calls application services (`[appservices]`; the registrations themselves
/// are files in `<data_dir>/appservices`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppservicesConfig {
    /// Longest wait between retries to an appservice that is down, in seconds (the backoff
    /// doubles from one second up to it).
    #[serde(default = "default_as_retry_cap")]
    pub retry_cap_secs: u64,
    /// Timeout of one request to an appservice (a transaction, a query, a ping), in seconds.
    #[serde(default = "default_as_request_timeout")]
    pub request_timeout_secs: u64,
}

fn default_as_retry_cap() -> u64 {
    60
}
fn default_as_request_timeout() -> u64 {
    30
}

impl Default for AppservicesConfig {
    fn default() -> Self {
        Self {
            retry_cap_secs: default_as_retry_cap(),
            request_timeout_secs: default_as_request_timeout(),
        }
    }
}

/// Closed federation: where peers reach us, and how we retry them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// TLS listener for peers (`host:port`). No listener, and no federation, when absent.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The `host:port` endpoints written into our peer card (how peers dial us); defaults to
    /// `listen`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Longest wait between retries to an unreachable peer, in seconds.
    #[serde(default = "default_retry_cap")]
    pub retry_cap_secs: u64,
    /// Timeout of one outbound request, in seconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Largest inbound federation request body, in bytes.
    #[serde(default = "default_federation_body")]
    pub max_body_bytes: usize,
}

fn default_retry_cap() -> u64 {
    300
}
fn default_request_timeout() -> u64 {
    30
}
fn default_federation_body() -> usize {
    8 * 1024 * 1024
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            listen: None,
            endpoints: Vec::new(),
            retry_cap_secs: default_retry_cap(),
            request_timeout_secs: default_request_timeout(),
            max_body_bytes: default_federation_body(),
        }
    }
}

impl FederationConfig {
    /// The endpoints for our peer card.
    pub fn card_endpoints(&self) -> Vec<String> {
        if self.endpoints.is_empty() {
            self.listen.iter().map(|a| a.to_string()).collect()
        } else {
            self.endpoints.clone()
        }
    }
}

/// The media repository: how much a user may upload, and whether the deprecated
/// unauthenticated download routes still serve anything.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest single upload, in bytes; larger uploads get 413 `M_TOO_LARGE`. Advertised to
    /// clients as `m.upload.size`. Independent of `limits.max_body_bytes`, which caps JSON bodies.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Total bytes one user may have uploaded; an upload that would exceed it gets 403
    /// `M_FORBIDDEN`, as the spec asks. `0` means no quota. A unit's disk is small and shared by
    /// every user, so one user must not be able to fill it.
    #[serde(default = "default_user_quota")]
    pub user_quota_bytes: u64,
    /// Serve local media on the deprecated unauthenticated `/_matrix/media/v3/download` and
    /// `/thumbnail` routes. Off by default: the spec asks servers to freeze them, and anyone who
    /// can reach the listener could fetch media by its ID without an account.
    #[serde(default)]
    pub legacy_unauthenticated_downloads: bool,
}

fn default_max_upload() -> u64 {
    50 * 1024 * 1024
}
fn default_user_quota() -> u64 {
    1024 * 1024 * 1024
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: default_max_upload(),
            user_quota_bytes: default_user_quota(),
            legacy_unauthenticated_downloads: false,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML was malformed or had unknown/mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The config path.
        path: PathBuf,
        /// What was wrong, from the TOML parser.
        message: String,
    },
    /// A value was syntactically fine but not usable.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a TOML config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|err| {
            let line = err
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1);
            let message = err.message().replace('\n', " ");
            ConfigError::Parse {
                path: path.to_owned(),
                message: match line {
                    Some(line) => format!("line {line}: {message}"),
                    None => message,
                },
            }
        })?;
        Self::resolve(file, false)
    }

    /// The embedded default used by `homeserver dev`: open registration, local data dir. With
    /// `tls`, HTTPS with a certificate from the unit CA (a dev CA, made in the data dir) for
    /// `localhost` and the listen address.
    pub fn dev(
        data_dir: Option<PathBuf>,
        listen: Option<SocketAddr>,
        server_name: Option<String>,
        tls: bool,
    ) -> Result<Self, ConfigError> {
        let client = listen.unwrap_or_else(default_client_listen);
        let (tls, public_names, public_base_url) = if tls {
            (
                ClientTlsMode::UnitCa,
                vec!["localhost".to_owned(), client.ip().to_string()],
                Some(format!("https://{client}")),
            )
        } else {
            (ClientTlsMode::Off, Vec::new(), None)
        };
        let file = FileConfig {
            server_name: server_name.unwrap_or_else(|| "localhost:8008".to_owned()),
            data_dir: data_dir.unwrap_or_else(|| PathBuf::from("outpost-dev")),
            listen: ListenSection {
                client,
                public_base_url,
                public_names,
                tls,
                insecure_plain_http: false,
                ca_http: None,
            },
            registration: RegistrationConfig {
                enabled: true,
                tokens: Vec::new(),
            },
            rate_limit: RateLimitConfig::default(),
            limits: LimitsConfig::default(),
            connections: ConnectionsConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            federation: FederationConfig::default(),
            appservices: AppservicesConfig::default(),
            media: MediaConfig::default(),
            auth: AuthConfig::default(),
        };
        Self::resolve(file, true)
    }

    fn resolve(file: FileConfig, dev_mode: bool) -> Result<Self, ConfigError> {
        let server_name = OwnedServerName::try_from(file.server_name.as_str()).map_err(|err| {
            ConfigError::Invalid(format!(
                "server_name {:?} is not valid: {err}",
                file.server_name
            ))
        })?;
        if file.rate_limit.enabled
            && (!file.rate_limit.per_second.is_finite() || file.rate_limit.per_second <= 0.0)
        {
            return Err(ConfigError::Invalid(
                "rate_limit.per_second must be a positive number".to_owned(),
            ));
        }
        if file.limits.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits.max_body_bytes must be at least 1024".to_owned(),
            ));
        }
        if file.limits.account_data_max_bytes == 0
            || file.limits.account_data_quota_bytes < file.limits.account_data_max_bytes as u64
        {
            return Err(ConfigError::Invalid(
                "limits.account_data_max_bytes must be > 0 and at most limits.account_data_quota_bytes"
                    .to_owned(),
            ));
        }
        if file.storage.read_connections == 0
            || file.storage.checkpoint_interval_secs == 0
            || file.storage.passive_checkpoint_ms == 0
        {
            return Err(ConfigError::Invalid(
                "storage.read_connections, storage.checkpoint_interval_secs and \
                 storage.passive_checkpoint_ms must be > 0"
                    .to_owned(),
            ));
        }
        if file
            .storage
            .admin_contact
            .as_deref()
            .is_some_and(|contact| !contact.contains(':') || contact.trim() != contact)
        {
            return Err(ConfigError::Invalid(
                "storage.admin_contact must be a URI such as mailto:it@example.org".to_owned(),
            ));
        }
        if file
            .registration
            .tokens
            .iter()
            .any(|t| t.is_empty() || t.len() > 64)
        {
            return Err(ConfigError::Invalid(
                "registration.tokens must be 1 to 64 characters each".to_owned(),
            ));
        }
        let c = &file.connections;
        if c.header_timeout_secs == 0
            || c.idle_timeout_secs == 0
            || c.client_max == 0
            || c.client_max_per_address == 0
            || c.long_poll_max == 0
            || c.federation_max == 0
            || c.federation_max_per_address == 0
            || c.body_timeout_secs == 0
            || c.body_min_rate == 0
        {
            return Err(ConfigError::Invalid(
                "every [connections] timeout and cap must be > 0".to_owned(),
            ));
        }
        if file.media.max_upload_bytes == 0 {
            return Err(ConfigError::Invalid(
                "media.max_upload_bytes must be > 0".to_owned(),
            ));
        }
        let (public_base_url, public_names) = resolve_listen(&file.listen)?;
        Ok(Self {
            server_name,
            data_dir: file.data_dir,
            client_listen: file.listen.client,
            public_base_url,
            client_tls: file.listen.tls,
            public_names,
            ca_http: file.listen.ca_http,
            registration: file.registration,
            rate_limit: file.rate_limit,
            limits: file.limits,
            connections: file.connections,
            storage: file.storage,
            log: file.log,
            admin: file.admin,
            federation: file.federation,
            appservices: file.appservices,
            media: file.media,
            auth: file.auth,
            dev_mode,
        })
    }
}

/// Checks the `[listen]` section's TLS keys against each other and resolves the public base
/// URL and names: TLS on needs an `https://` URL and names to issue or check the certificate
/// for; plain HTTP off loopback is refused unless `insecure_plain_http` says so, since every
/// password and access token would cross the network in clear.
fn resolve_listen(listen: &ListenSection) -> Result<(Option<String>, Vec<String>), ConfigError> {
    let invalid = |why: String| ConfigError::Invalid(why);
    let configured = match &listen.public_base_url {
        Some(raw) => Some(
            check_public_base_url(raw)
                .map_err(|why| invalid(format!("listen.public_base_url: {why}")))?,
        ),
        None => None,
    };
    let mut names = Vec::new();
    for raw in &listen.public_names {
        let name =
            check_public_name(raw).map_err(|why| invalid(format!("listen.public_names: {why}")))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if listen.tls == ClientTlsMode::Off {
        let ip = listen.client.ip();
        if !ip.is_loopback() && !listen.insecure_plain_http {
            return Err(invalid(format!(
                "listen.client {} is not a loopback address and listen.tls is \"off\": plain HTTP \
                 would carry passwords and access tokens in clear; set listen.tls = \"unit-ca\" \
                 or \"imported\" (or insecure_plain_http = true to accept that)",
                listen.client
            )));
        }
        if listen.ca_http.is_some() {
            return Err(invalid(
                "listen.ca_http serves the unit CA for HTTPS clients; it needs listen.tls on"
                    .to_owned(),
            ));
        }
        let base = match configured {
            Some(url) => Some(url),
            None if ip.is_unspecified() => None,
            None => Some(format!("http://{}", listen.client)),
        };
        return Ok((base, names));
    }
    let base = match configured {
        Some(url) if !url.starts_with("https://") => {
            return Err(invalid(format!(
                "listen.public_base_url {url:?} must start with https:// when listen.tls is {:?}",
                listen.tls.as_str()
            )));
        }
        Some(url) => url,
        None => {
            let Some(first) = names.first() else {
                return Err(invalid(format!(
                    "listen.tls is {:?} but neither listen.public_base_url nor \
                     listen.public_names says which names the certificate is for",
                    listen.tls.as_str()
                )));
            };
            if first.starts_with("*.") {
                return Err(invalid(
                    "listen.public_base_url is needed when the first public name is a wildcard"
                        .to_owned(),
                ));
            }
            let host = if first.contains(':') {
                format!("[{first}]")
            } else {
                first.clone()
            };
            match listen.client.port() {
                443 => format!("https://{host}"),
                port => format!("https://{host}:{port}"),
            }
        }
    };
    if names.is_empty() {
        names.push(url_host(&base).to_ascii_lowercase());
    }
    Ok((Some(base), names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(toml_text: &str) -> Result<(Option<String>, Vec<String>), String> {
        let section: ListenSection = toml::from_str(toml_text).map_err(|err| err.to_string())?;
        resolve_listen(&section).map_err(|err| err.to_string())
    }

    #[test]
    fn plain_http_is_refused_off_loopback_unless_allowed() {
        assert!(listen("client = \"127.0.0.5:8008\"").is_ok());
        assert!(listen("client = \"[::1]:8008\"").is_ok());
        let refused = listen("client = \"0.0.0.0:8008\"").expect_err("refused");
        assert!(refused.contains("insecure_plain_http"), "{refused}");
        assert!(!refused.contains('\n'), "one line: {refused}");
        assert!(listen("client = \"10.20.0.5:8008\"").is_err());
        assert_eq!(
            listen("client = \"0.0.0.0:8008\"\ninsecure_plain_http = true"),
            Ok((None, vec![]))
        );
        assert!(
            listen("client = \"127.0.0.1:8008\"\nca_http = \"127.0.0.1:8080\"").is_err(),
            "ca_http needs TLS"
        );
    }

    #[test]
    fn tls_needs_https_and_names() {
        assert!(listen("client = \"0.0.0.0:443\"\ntls = \"unit-ca\"").is_err());
        assert!(
            listen(
                "client = \"0.0.0.0:443\"\ntls = \"unit-ca\"\n\
                 public_base_url = \"http://chat.unit-a.example\""
            )
            .is_err()
        );
        assert!(listen("client = \"0.0.0.0:443\"\ntls = \"acme\"").is_err());
        assert_eq!(
            listen(
                "client = \"0.0.0.0:443\"\ntls = \"imported\"\n\
                 public_base_url = \"https://Chat.Unit-A.example/\""
            ),
            Ok((
                Some("https://Chat.Unit-A.example".to_owned()),
                vec!["chat.unit-a.example".to_owned()]
            ))
        );
        assert_eq!(
            listen(
                "client = \"0.0.0.0:8443\"\ntls = \"unit-ca\"\n\
                 public_names = [\"10.20.0.5\", \"chat.unit-a.example\", \"10.20.0.5\"]"
            ),
            Ok((
                Some("https://10.20.0.5:8443".to_owned()),
                vec!["10.20.0.5".to_owned(), "chat.unit-a.example".to_owned()]
            ))
        );
        assert_eq!(
            listen("client = \"[::]:443\"\ntls = \"unit-ca\"\npublic_names = [\"fd00::5\"]")
                .map(|(base, _)| base),
            Ok(Some("https://[fd00::5]".to_owned()))
        );
    }

    #[test]
    fn public_names_are_dns_names_or_addresses() {
        assert_eq!(check_public_name("10.20.0.5").as_deref(), Ok("10.20.0.5"));
        assert_eq!(check_public_name("fd00::5").as_deref(), Ok("fd00::5"));
        assert_eq!(
            check_public_name("Chat.Unit-A.example").as_deref(),
            Ok("chat.unit-a.example")
        );
        assert!(check_public_name("*.unit-a.example").is_ok());
        for bad in [
            "",
            "chat..example",
            "-chat.example",
            "chat example",
            "https://x",
            "a.*.b",
        ] {
            assert!(check_public_name(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_public_base_url_is_scheme_host_and_port_only() {
        assert_eq!(
            check_public_base_url("https://chat.unit-a.example/").as_deref(),
            Ok("https://chat.unit-a.example")
        );
        assert!(check_public_base_url("http://10.20.0.5:8008").is_ok());
        assert!(check_public_base_url("http://[fd00::5]:8008").is_ok());
        for bad in [
            "chat.unit-a.example",
            "ftp://chat.unit-a.example",
            "https://",
            "https://:8008",
            "https://chat.unit-a.example/matrix",
            "https://chat.unit-a.example?x=1",
            "https://user@chat.unit-a.example",
            "https://chat unit",
        ] {
            assert!(check_public_base_url(bad).is_err(), "{bad} accepted");
        }
    }
}
