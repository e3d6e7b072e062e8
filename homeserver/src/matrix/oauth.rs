//! The OAuth 2.0 API's pure rules (spec "OAuth 2.0 API", RFC 7591, RFC 7636, RFC 8252): URI
//! splitting, client metadata and redirect-URI validation, redirect-URI matching, PKCE `S256`,
//! scope parsing and the shape of codes users type.
//!
//! No I/O and no clock: the services hand these functions strings and act on the answers.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The scope token granting the whole Client-Server API.
pub const SCOPE_API: &str = "urn:matrix:client:api:*";

/// The prefix of the scope token that allocates a device.
pub const SCOPE_DEVICE_PREFIX: &str = "urn:matrix:client:device:";

/// MSC2967's unstable name of [`SCOPE_API`], which clients still send (matrix-rust-sdk 0.18
/// and Element X hard-code it); accepted as the same scope, as Matrix Authentication Service
/// does, so those clients can sign in.
const SCOPE_API_UNSTABLE: &str = "urn:matrix:org.matrix.msc2967.client:api:*";

/// MSC2967's unstable name of [`SCOPE_DEVICE_PREFIX`].
const SCOPE_DEVICE_PREFIX_UNSTABLE: &str = "urn:matrix:org.matrix.msc2967.client:device:";

/// The device authorisation grant's type (RFC 8628).
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The grant types the token endpoint supports, in the order the metadata lists them.
pub const GRANT_TYPES: [&str; 3] = ["authorization_code", "refresh_token", GRANT_DEVICE_CODE];

/// Redirect URIs one client may register: enough for any real client, bounded for storage.
const MAX_REDIRECT_URIS: usize = 20;

/// Longest URI or name accepted in client metadata.
const MAX_FIELD_LEN: usize = 2048;

/// A URI split into its RFC 3986 components (no normalisation: what is compared is what was
/// registered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    /// The scheme, lower-cased by the caller's comparison (kept as written).
    pub scheme: &'a str,
    /// The authority, when the URI has `//`.
    pub authority: Option<Authority<'a>>,
    /// The path (possibly empty).
    pub path: &'a str,
    /// The query without `?`.
    pub query: Option<&'a str>,
    /// The fragment without `#`.
    pub fragment: Option<&'a str>,
}

/// The authority component of a [`Uri`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority<'a> {
    /// `user:password` before `@`, if any.
    pub userinfo: Option<&'a str>,
    /// The host (an IPv6 literal keeps its brackets).
    pub host: &'a str,
    /// The port as written, if any.
    pub port: Option<&'a str>,
}

/// Splits an absolute URI; `None` when it has no valid scheme or contains characters no URI
/// may hold (spaces, controls, non-ASCII).
pub fn parse_uri(raw: &str) -> Option<Uri<'_>> {
    if raw.is_empty() || raw.len() > MAX_FIELD_LEN || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let (scheme, rest) = raw.split_once(':')?;
    let mut chars = scheme.chars();
    if !chars.next()?.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            (Some(parse_authority(&after[..end])?), &after[end..])
        }
        None => (None, rest),
    };
    Some(Uri {
        scheme,
        authority,
        path,
        query,
        fragment,
    })
}

fn parse_authority(raw: &str) -> Option<Authority<'_>> {
    let (userinfo, hostport) = match raw.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, raw),
    };
    let (host, port) = if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        let host = &hostport[..=end];
        match &hostport[end + 1..] {
            "" => (host, None),
            rest => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some(Authority {
        userinfo,
        host,
        port,
    })
}

/// Why client metadata was refused, as RFC 7591 section 3.2.2 names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataError {
    /// `invalid_redirect_uri`: a redirect URI breaks the spec's rules.
    RedirectUri(String),
    /// `invalid_client_metadata`: any other field is missing or wrong.
    ClientMetadata(String),
}

impl MetadataError {
    /// The RFC 7591 error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RedirectUri(_) => "invalid_redirect_uri",
            Self::ClientMetadata(_) => "invalid_client_metadata",
        }
    }

    /// The human-readable description.
    pub fn description(&self) -> &str {
        match self {
            Self::RedirectUri(why) | Self::ClientMetadata(why) => why,
        }
    }
}

/// `web` or `native` (spec: "Redirect URI validation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplicationType {
    /// A browser-based client: HTTPS redirect URIs under its client URI.
    Web,
    /// An installed app: private-use schemes, loopback `http` or claimed `https` URIs.
    Native,
}

impl ApplicationType {
    /// Parses the metadata value; absent means `web`.
    pub fn parse(raw: Option<&str>) -> Result<Self, MetadataError> {
        match raw {
            None | Some("web") => Ok(Self::Web),
            Some("native") => Ok(Self::Native),
            Some(other) => Err(MetadataError::ClientMetadata(format!(
                "application_type {other:?} is neither \"web\" nor \"native\""
            ))),
        }
    }

    /// The metadata value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Native => "native",
        }
    }
}

/// The client metadata fields the rules look at, as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct MetadataInput<'a> {
    /// `client_uri` (required here: the spec lets servers refuse clients without one).
    pub client_uri: Option<&'a str>,
    /// `logo_uri`.
    pub logo_uri: Option<&'a str>,
    /// `tos_uri`.
    pub tos_uri: Option<&'a str>,
    /// `policy_uri`.
    pub policy_uri: Option<&'a str>,
    /// `client_name`.
    pub client_name: Option<&'a str>,
    /// `redirect_uris`.
    pub redirect_uris: &'a [String],
    /// `application_type`.
    pub application_type: Option<&'a str>,
    /// `token_endpoint_auth_method`.
    pub token_endpoint_auth_method: Option<&'a str>,
    /// `grant_types` (absent: `authorization_code`, RFC 7591 section 2).
    pub grant_types: Option<&'a [String]>,
    /// `response_types` (absent: `code`).
    pub response_types: Option<&'a [String]>,
}

/// Metadata that passed the rules, with unknown grant and response types dropped (the spec:
/// "the server MUST ignore values that it does not understand").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidMetadata {
    /// The application type.
    pub application_type: ApplicationType,
    /// The supported grant types the client asked for.
    pub grant_types: Vec<&'static str>,
    /// `["code"]` or empty.
    pub response_types: Vec<&'static str>,
}

/// Whether `host` is `base` or a subdomain of it (hosts compared case-insensitively).
fn same_or_subdomain(host: &str, base: &str) -> bool {
    let (host, base) = (host.to_ascii_lowercase(), base.to_ascii_lowercase());
    host == base || host.ends_with(&format!(".{base}"))
}

/// The host of an `https` URI without credentials, or why not.
fn https_host<'a>(field: &str, raw: &'a str, allow_userinfo: bool) -> Result<&'a str, String> {
    let uri = parse_uri(raw).ok_or_else(|| format!("{field} is not a valid URI"))?;
    if !uri.scheme.eq_ignore_ascii_case("https") {
        return Err(format!("{field} must use the https scheme"));
    }
    let authority = uri
        .authority
        .filter(|a| !a.host.is_empty())
        .ok_or_else(|| format!("{field} names no host"))?;
    if authority.userinfo.is_some() && !allow_userinfo {
        return Err(format!("{field} must not carry a user or password"));
    }
    Ok(authority.host)
}

/// Checks client metadata against the spec's rules (`client_uri`, `logo_uri`, `tos_uri`,
/// `policy_uri`, `redirect_uris` per `application_type`, public clients only).
pub fn validate_metadata(input: &MetadataInput<'_>) -> Result<ValidMetadata, MetadataError> {
    let meta = |why: String| MetadataError::ClientMetadata(why);
    let client_uri = input
        .client_uri
        .ok_or_else(|| meta("client_uri is required".to_owned()))?;
    let base = https_host("client_uri", client_uri, false).map_err(meta)?;
    if input.client_name.is_some_and(|n| n.len() > MAX_FIELD_LEN) {
        return Err(meta("client_name is too long".to_owned()));
    }
    for (field, value, userinfo) in [
        ("logo_uri", input.logo_uri, true),
        ("tos_uri", input.tos_uri, false),
        ("policy_uri", input.policy_uri, false),
    ] {
        if let Some(value) = value {
            let host = https_host(field, value, userinfo).map_err(meta)?;
            if !same_or_subdomain(host, base) {
                return Err(meta(format!(
                    "{field} must be on the client_uri's host or a subdomain of it"
                )));
            }
        }
    }
    match input.token_endpoint_auth_method {
        None | Some("none") => {}
        Some(other) => {
            return Err(meta(format!(
                "token_endpoint_auth_method {other:?} is not supported: only public clients (\"none\")"
            )));
        }
    }
    let application_type = ApplicationType::parse(input.application_type)?;
    let grant_types: Vec<&'static str> = match input.grant_types {
        None => vec!["authorization_code"],
        Some(asked) => GRANT_TYPES
            .into_iter()
            .filter(|g| asked.iter().any(|a| a == g))
            .collect(),
    };
    let response_types: Vec<&'static str> = match input.response_types {
        None => vec!["code"],
        Some(asked) if asked.iter().any(|r| r == "code") => vec!["code"],
        Some(_) => Vec::new(),
    };
    if input.redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(MetadataError::RedirectUri(format!(
            "at most {MAX_REDIRECT_URIS} redirect_uris"
        )));
    }
    if grant_types.contains(&"authorization_code") && input.redirect_uris.is_empty() {
        return Err(MetadataError::RedirectUri(
            "the authorization_code grant needs at least one redirect URI".to_owned(),
        ));
    }
    for uri in input.redirect_uris {
        check_redirect_uri(uri, base, application_type).map_err(MetadataError::RedirectUri)?;
    }
    Ok(ValidMetadata {
        application_type,
        grant_types,
        response_types,
    })
}

/// The loopback hosts a native client may redirect to.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Checks one redirect URI of a client whose `client_uri` host is `base`.
fn check_redirect_uri(raw: &str, base: &str, kind: ApplicationType) -> Result<(), String> {
    let uri = parse_uri(raw).ok_or_else(|| format!("{raw:?} is not a valid URI"))?;
    if uri.fragment.is_some() {
        return Err(format!("{raw:?} must not have a fragment"));
    }
    let web_rules = || -> Result<(), String> {
        let host =
            https_host("the redirect URI", raw, false).map_err(|why| format!("{raw:?}: {why}"))?;
        if !same_or_subdomain(host, base) {
            return Err(format!(
                "{raw:?} must be on the client_uri's host or a subdomain of it"
            ));
        }
        Ok(())
    };
    match kind {
        ApplicationType::Web => web_rules(),
        ApplicationType::Native => {
            let scheme = uri.scheme.to_ascii_lowercase();
            if scheme == "https" {
                return web_rules();
            }
            if scheme == "http" {
                let authority = uri.authority.as_ref().ok_or_else(|| {
                    format!("{raw:?}: an http redirect URI must name a loopback host")
                })?;
                if authority.userinfo.is_some()
                    || !LOOPBACK_HOSTS.contains(&authority.host.to_ascii_lowercase().as_str())
                {
                    return Err(format!(
                        "{raw:?}: http redirect URIs must use localhost, 127.0.0.1 or [::1]"
                    ));
                }
                if authority.port.is_some() {
                    return Err(format!(
                        "{raw:?}: a loopback redirect URI must not name a port (any port is accepted)"
                    ));
                }
                return Ok(());
            }
            // A private-use scheme: the client URI's host in reverse-DNS order, no authority.
            if uri.authority.is_some() || uri.path.starts_with("//") {
                return Err(format!(
                    "{raw:?}: a private-use URI scheme must not have an authority component"
                ));
            }
            let reversed: Vec<&str> = base.rsplit('.').collect();
            let reversed = reversed.join(".").to_ascii_lowercase();
            if !scheme.contains('.')
                || !(scheme == reversed || scheme.starts_with(&format!("{reversed}.")))
            {
                return Err(format!(
                    "{raw:?}: a private-use scheme must start with {reversed:?} (the client_uri's host reversed)"
                ));
            }
            Ok(())
        }
    }
}

/// Whether `given` is one of the `registered` redirect URIs: an exact match, or for a native
/// client's loopback URI the same URI with any port (RFC 8252 section 7.3).
pub fn redirect_uri_matches(registered: &[String], given: &str, kind: ApplicationType) -> bool {
    if registered.iter().any(|r| r == given) {
        return true;
    }
    if kind != ApplicationType::Native {
        return false;
    }
    let Some(uri) = parse_uri(given) else {
        return false;
    };
    let Some(authority) = uri.authority.as_ref() else {
        return false;
    };
    if !uri.scheme.eq_ignore_ascii_case("http")
        || authority.port.is_none()
        || authority.userinfo.is_some()
        || !LOOPBACK_HOSTS.contains(&authority.host.to_ascii_lowercase().as_str())
        || uri.fragment.is_some()
    {
        return false;
    }
    let without_port = Uri {
        authority: Some(Authority {
            port: None,
            ..authority.clone()
        }),
        ..uri.clone()
    };
    registered
        .iter()
        .any(|r| parse_uri(r).as_ref() == Some(&without_port))
}

/// Whether a PKCE `code_verifier` has RFC 7636's form: 43 to 128 unreserved characters.
pub fn valid_code_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether a `code_challenge` can be an `S256` challenge: 43 base64url characters.
pub fn valid_code_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// The `S256` challenge of a verifier: BASE64URL(SHA256(verifier)) without padding.
pub fn s256_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` answers `challenge` (RFC 7636 section 4.6, `S256` only).
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    valid_code_verifier(verifier) && s256_challenge(verifier) == challenge
}

/// A requested scope that grants a Matrix session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The device the tokens belong to.
    pub device_id: String,
    /// Whether the client named its device with MSC2967's unstable prefix: the granted scope
    /// is then written in the unstable names too, so it reads back as what the client asked.
    pub unstable: bool,
}

impl Scope {
    /// The scope string granted (normalised order).
    pub fn to_scope_string(&self) -> String {
        if self.unstable {
            format!(
                "{SCOPE_API_UNSTABLE} {SCOPE_DEVICE_PREFIX_UNSTABLE}{}",
                self.device_id
            )
        } else {
            format!("{SCOPE_API} {SCOPE_DEVICE_PREFIX}{}", self.device_id)
        }
    }
}

/// Parses a requested scope: `urn:matrix:client:api:*` and exactly one
/// `urn:matrix:client:device:<id>` (or their MSC2967 unstable names), whose ID uses RFC 3986's
/// unreserved characters (1 to 255 of them). Any other token is refused (`invalid_scope`),
/// naming why.
pub fn parse_scope(raw: &str) -> Result<Scope, String> {
    let mut api = false;
    let mut device = None;
    let mut unstable = false;
    for token in raw.split(' ').filter(|t| !t.is_empty()) {
        let device_id = token.strip_prefix(SCOPE_DEVICE_PREFIX).or_else(|| {
            let id = token.strip_prefix(SCOPE_DEVICE_PREFIX_UNSTABLE);
            unstable |= id.is_some();
            id
        });
        if token == SCOPE_API || token == SCOPE_API_UNSTABLE {
            api = true;
        } else if let Some(id) = device_id {
            if device.is_some() {
                return Err("the scope must name exactly one device".to_owned());
            }
            let valid = !id.is_empty()
                && id.len() <= 255
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if !valid {
                return Err(format!(
                    "device ID {id:?} must be 1 to 255 of A-Z a-z 0-9 - . _ ~"
                ));
            }
            device = Some(id.to_owned());
        } else {
            return Err(format!("unknown scope token {token:?}"));
        }
    }
    if !api {
        return Err(format!("the scope must include {SCOPE_API}"));
    }
    let device_id = device.ok_or_else(|| "the scope must name a device".to_owned())?;
    Ok(Scope {
        device_id,
        unstable,
    })
}

/// Characters of a user code: no vowels (no words) and none that look alike (RFC 8628 6.1).
pub const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Normalises what a user typed as a user code: upper case, dashes and spaces dropped.
pub fn normalise_user_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Formats an 8-character user code for display: `ABCD-EFGH`.
pub fn display_user_code(code: &str) -> String {
    if code.len() == 8 {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_owned()
    }
}

/// Appends the authorisation response to a redirect URI: in its query (`query`, joining an
/// existing query with `&`) or as its fragment (`fragment`). `params` are encoded here.
pub fn redirect_with(redirect_uri: &str, fragment: bool, params: &[(&str, &str)]) -> String {
    let encoded = serde_urlencoded::to_string(params).unwrap_or_default();
    if fragment {
        format!("{redirect_uri}#{encoded}")
    } else if redirect_uri.contains('?') {
        format!("{redirect_uri}&{encoded}")
    } else {
        format!("{redirect_uri}?{encoded}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uris(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn check(kind: &str, redirect: &str) -> Result<ValidMetadata, MetadataError> {
        let redirects = uris(&[redirect]);
        validate_metadata(&MetadataInput {
            client_uri: Some("https://example.com/"),
            redirect_uris: &redirects,
            application_type: Some(kind),
            ..Default::default()
        })
    }

    #[test]
    fn splits_uris() {
        let uri = parse_uri("https://u:p@App.example.com:5173/cb?x=1#frag").expect("uri");
        assert_eq!(uri.scheme, "https");
        let authority = uri.authority.expect("authority");
        assert_eq!(authority.userinfo, Some("u:p"));
        assert_eq!(authority.host, "App.example.com");
        assert_eq!(authority.port, Some("5173"));
        assert_eq!(uri.path, "/cb");
        assert_eq!(uri.query, Some("x=1"));
        assert_eq!(uri.fragment, Some("frag"));
        let native = parse_uri("com.example:/cb").expect("uri");
        assert_eq!(
            (native.scheme, native.authority, native.path),
            ("com.example", None, "/cb")
        );
        let v6 = parse_uri("http://[::1]:8080/").expect("uri");
        assert_eq!(v6.authority.expect("a").host, "[::1]");
        for bad in [
            "",
            "no-scheme",
            "1http://x",
            "https://x y",
            "https://x:/",
            "https://x:ab/",
        ] {
            assert!(parse_uri(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn web_redirect_uris_follow_the_spec_examples() {
        for good in [
            "https://example.com/callback",
            "https://app.example.com/callback",
            "https://example.com:5173/?query=value",
        ] {
            assert!(check("web", good).is_ok(), "{good}");
        }
        for bad in [
            "https://example.com/callback#fragment",
            "http://example.com/callback",
            "http://localhost/",
            "https://evil.com/callback",
            "https://example.com.evil.com/",
            "https://user:pw@example.com/",
        ] {
            let err = check("web", bad).expect_err(bad);
            assert_eq!(err.code(), "invalid_redirect_uri", "{bad}");
        }
    }

    #[test]
    fn native_redirect_uris_follow_the_spec_examples() {
        for good in [
            "com.example.app:/callback",
            "com.example:/",
            "com.example:callback",
            "http://localhost/callback",
            "http://127.0.0.1/callback",
            "http://[::1]/callback",
            "https://app.example.com/callback",
        ] {
            assert!(check("native", good).is_ok(), "{good}");
        }
        for bad in [
            "example:/callback",
            "com.example.app://callback",
            "https://localhost/callback",
            "http://localhost:1234/callback",
            "org.example:/callback",
            "com.exampleevil:/x",
        ] {
            let err = check("native", bad).expect_err(bad);
            assert_eq!(err.code(), "invalid_redirect_uri", "{bad}");
        }
    }

    #[test]
    fn other_metadata_rules() {
        let redirects = uris(&["https://example.com/cb"]);
        let base = MetadataInput {
            client_uri: Some("https://example.com/"),
            redirect_uris: &redirects,
            ..Default::default()
        };
        assert!(validate_metadata(&base).is_ok());
        let cases: Vec<MetadataInput<'_>> = vec![
            MetadataInput {
                client_uri: None,
                ..base.clone()
            },
            MetadataInput {
                client_uri: Some("http://example.com/"),
                ..base.clone()
            },
            MetadataInput {
                client_uri: Some("https://u:p@example.com/"),
                ..base.clone()
            },
            MetadataInput {
                logo_uri: Some("https://other.org/logo.png"),
                ..base.clone()
            },
            MetadataInput {
                tos_uri: Some("http://example.com/tos"),
                ..base.clone()
            },
            MetadataInput {
                policy_uri: Some("https://u@example.com/policy"),
                ..base.clone()
            },
            MetadataInput {
                application_type: Some("desktop"),
                ..base.clone()
            },
            MetadataInput {
                token_endpoint_auth_method: Some("client_secret_basic"),
                ..base.clone()
            },
        ];
        for case in cases {
            let err = validate_metadata(&case).expect_err("refused");
            assert_eq!(err.code(), "invalid_client_metadata", "{case:?}");
        }
        let none: Vec<String> = Vec::new();
        let err = validate_metadata(&MetadataInput {
            redirect_uris: &none,
            ..base.clone()
        })
        .expect_err("no redirect");
        assert_eq!(err.code(), "invalid_redirect_uri");
        let grants = uris(&["authorization_code", "refresh_token", "urn:x:unknown"]);
        let valid = validate_metadata(&MetadataInput {
            grant_types: Some(grants.as_slice()),
            logo_uri: Some("https://cdn.example.com/logo.png"),
            ..base
        })
        .expect("valid");
        assert_eq!(
            valid.grant_types,
            vec!["authorization_code", "refresh_token"]
        );
    }

    #[test]
    fn loopback_redirects_match_any_port() {
        let registered = uris(&["http://127.0.0.1/callback", "com.example:/cb"]);
        let native = ApplicationType::Native;
        assert!(redirect_uri_matches(
            &registered,
            "http://127.0.0.1:43123/callback",
            native
        ));
        assert!(redirect_uri_matches(&registered, "com.example:/cb", native));
        assert!(!redirect_uri_matches(
            &registered,
            "http://127.0.0.1:43123/other",
            native
        ));
        assert!(!redirect_uri_matches(
            &registered,
            "http://127.0.0.1:1/callback#x",
            native
        ));
        assert!(!redirect_uri_matches(
            &registered,
            "http://127.0.0.1:43123/callback",
            ApplicationType::Web
        ));
        assert!(!redirect_uri_matches(
            &registered,
            "com.example:/cb/",
            native
        ));
    }

    #[test]
    fn pkce_s256_matches_the_rfc_example() {
        // RFC 7636 appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(s256_challenge(verifier), challenge);
        assert!(pkce_matches(verifier, challenge));
        assert!(valid_code_challenge(challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
        assert!(!valid_code_challenge("plain-challenge"));
    }

    #[test]
    fn scopes() {
        let scope = parse_scope("urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ")
            .expect("scope");
        assert_eq!(scope.device_id, "ABCDEFGHIJ");
        assert_eq!(
            scope.to_scope_string(),
            "urn:matrix:client:api:* urn:matrix:client:device:ABCDEFGHIJ"
        );
        // MSC2967's unstable names (what matrix-rust-sdk 0.18 sends) are the same scope, and
        // the grant reads back in the client's own names.
        let unstable = "urn:matrix:org.matrix.msc2967.client:api:* \
                        urn:matrix:org.matrix.msc2967.client:device:ABCDEFGHIJ";
        let scope = parse_scope(unstable).expect("unstable scope");
        assert_eq!(scope.device_id, "ABCDEFGHIJ");
        assert_eq!(scope.to_scope_string(), unstable);
        for bad in [
            "",
            "urn:matrix:client:api:*",
            "urn:matrix:client:device:AAA",
            "urn:matrix:client:api:* urn:matrix:client:device:A urn:matrix:client:device:B",
            "urn:matrix:client:api:* urn:matrix:client:device:",
            "urn:matrix:client:api:* urn:matrix:client:device:a/b",
            "urn:matrix:client:api:* urn:matrix:client:device:A openid",
        ] {
            assert!(parse_scope(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_carry_the_response() {
        assert_eq!(
            redirect_with(
                "https://a.example/cb",
                false,
                &[("code", "x y"), ("state", "s")]
            ),
            "https://a.example/cb?code=x+y&state=s"
        );
        assert_eq!(
            redirect_with("https://a.example/cb?v=1", false, &[("code", "c")]),
            "https://a.example/cb?v=1&code=c"
        );
        assert_eq!(
            redirect_with("https://a.example/cb", true, &[("error", "access_denied")]),
            "https://a.example/cb#error=access_denied"
        );
        assert_eq!(normalise_user_code("bcdf-ghjk"), "BCDFGHJK");
        assert_eq!(display_user_code("BCDFGHJK"), "BCDF-GHJK");
    }
}
