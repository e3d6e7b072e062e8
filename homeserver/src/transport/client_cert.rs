//! The pure checks of the client listener's certificate, shared by the homeserver (which
//! issues, loads and renews it) and `appliance` (which imports one from an organisation's PKI
//! and shows it in `status`): the CA fingerprint users compare, what a certificate says
//! ([`cert_info`]), and whether a certificate, key and chain can serve the names users type
//! ([`validate`]).
//!
//! No file I/O and no clock: callers hand in PEM text and the time, so the CLI can refuse a
//! bad import before it writes anything and the tests can check expiry deterministically.
//!
//! Certificates are read with `x509-parser` (names, issuer, dates: what webpki does not expose)
//! and chains are verified with webpki, the verifier rustls clients use. Names follow what
//! browsers and mobile clients check (RFC 6125 as the CA/Browser Forum applies it): only
//! subject alternative names count, never the common name; a DNS name matches DNS SANs
//! case-insensitively; a wildcard is a whole left-most label (`*.unit-a.example`) standing for
//! exactly one label and needs at least two labels after it; an IP address matches IP SANs
//! only.

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use time::OffsetDateTime;

/// The names users type live in the configuration (it checks them); the certificate checks
/// here match them.
pub use crate::config::{PublicName, parse_public_name};

/// Which of the inputs of [`validate`] a problem is in, so the CLI can name the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The certificate file (leaf first, then any intermediates).
    Certificate,
    /// The private key file.
    Key,
    /// The chain file (intermediates, optionally ending in the root).
    Chain,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Certificate => "certificate",
            Part::Key => "private key",
            Part::Chain => "chain",
        })
    }
}

/// Why a certificate, key or chain cannot serve the client listener. Each message is one line
/// a console user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not PEM, no certificate or key in it, or not a certificate or key we can use.
    #[error("{reason}")]
    Unreadable {
        /// Which input.
        part: Part,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not the one the leaf certificate was issued for.
    #[error("the private key does not belong to the certificate (their public keys differ)")]
    KeyMismatch,
    /// The leaf's validity ended.
    #[error("the certificate expired on {0}")]
    Expired(String),
    /// The leaf's validity has not begun (or the unit's clock is behind).
    #[error("the certificate is not valid before {0} (check the unit's clock)")]
    NotYetValid(String),
    /// Names users type that the leaf does not cover.
    #[error(
        "the certificate does not cover {}; it is for {}",
        listed(.missing),
        listed(.names)
    )]
    NamesNotCovered {
        /// The public names not covered.
        missing: Vec<String>,
        /// The names the certificate holds.
        names: Vec<String>,
    },
    /// The chain does not lead from the leaf to the last certificate given.
    #[error("the chain does not verify: {reason}")]
    Chain {
        /// Where the problem is (the chain file when one was given, else the certificate file).
        part: Part,
        /// What is wrong.
        reason: String,
    },
}

/// Names for a message: comma-separated, or a note that there are none.
fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "no DNS name or IP address".to_owned()
    } else {
        names.join(", ")
    }
}

impl CertError {
    /// The input the problem is in.
    pub fn part(&self) -> Part {
        match self {
            CertError::Unreadable { part, .. } | CertError::Chain { part, .. } => *part,
            CertError::KeyMismatch => Part::Key,
            CertError::Expired(_)
            | CertError::NotYetValid(_)
            | CertError::NamesNotCovered { .. } => Part::Certificate,
        }
    }
}

/// One subject alternative name of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// A DNS name, possibly a wildcard (`*.unit-a.example`), lowercased.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(name) => f.write_str(name),
            San::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// What a certificate says about itself, for `appliance status`, the admin reload answer and
/// the renewal check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Its subject alternative names (DNS names and IP addresses), in certificate order.
    pub sans: Vec<San>,
    /// Who issued it, as a distinguished name (`CN=Outpost unit CA …, O=Outpost`).
    pub issuer: String,
    /// Its subject, as a distinguished name.
    pub subject: String,
    /// Start of its validity.
    pub not_before: OffsetDateTime,
    /// End of its validity.
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    /// The names as text, for display and JSON.
    pub fn names(&self) -> Vec<String> {
        self.sans.iter().map(ToString::to_string).collect()
    }

    /// Whether the certificate is valid for `name` (the rules in the module header).
    pub fn covers(&self, name: &PublicName) -> bool {
        self.sans.iter().any(|san| san_covers(san, name))
    }

    /// The public names the certificate does not cover, in the order given.
    pub fn uncovered<'a>(&self, names: &'a [PublicName]) -> Vec<&'a PublicName> {
        names.iter().filter(|name| !self.covers(name)).collect()
    }

    /// Whole days from `now` until it expires (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}

/// Whether one SAN covers one public name.
fn san_covers(san: &San, name: &PublicName) -> bool {
    match (san, name) {
        (San::Ip(presented), PublicName::Ip(wanted)) => same_ip(*presented, *wanted),
        (San::Dns(presented), PublicName::Dns(wanted)) => dns_matches(presented, wanted),
        _ => false,
    }
}

/// IP equality that treats an IPv4-mapped IPv6 address as its IPv4 address.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// `presented` (from a certificate, lowercased) against `wanted` (lowercased, no trailing dot).
/// A wanted wildcard is covered only by the same wildcard.
fn dns_matches(presented: &str, wanted: &str) -> bool {
    let presented = presented.strip_suffix('.').unwrap_or(presented);
    if wanted.starts_with("*.") {
        return presented == wanted;
    }
    match presented.strip_prefix("*.") {
        Some(parent) => {
            // `*.a.b` stands for exactly one label in front of `a.b`; `*.b` is too broad for
            // any client to honour.
            parent.contains('.')
                && !parent.contains('*')
                && wanted
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent)
        }
        None => !presented.contains('*') && presented == wanted,
    }
}

/// Colon-separated uppercase hex pairs: how phones and browsers show a certificate's SHA-256.
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fingerprint users compare before trusting the unit CA: the SHA-256 of the first
/// certificate's DER in `ca_pem`, as colon-separated uppercase hex pairs (what phones and
/// browsers show in a certificate's details). The one implementation: the console
/// (`appliance tls client ca`), the plain-HTTP CA page and the tests all call it.
pub fn ca_fingerprint(ca_pem: &str) -> Result<String, CertError> {
    use sha2::Digest;
    let der = certificates(ca_pem, Part::Certificate)?
        .into_iter()
        .next()
        .ok_or_else(|| unreadable(Part::Certificate, "holds no certificate"))?;
    Ok(colon_hex(&sha2::Sha256::digest(der.as_ref())))
}

/// What the first certificate of `pem` says: names, issuer, subject and validity.
pub fn cert_info(pem: &str) -> Result<CertInfo, CertError> {
    let der = certificates(pem, Part::Certificate)?
        .into_iter()
        .next()
        .ok_or_else(|| unreadable(Part::Certificate, "holds no certificate"))?;
    der_info(&der, Part::Certificate)
}

/// A certificate, key and chain that passed [`validate`], ready to be written and served.
#[derive(Debug, Clone)]
pub struct Validated {
    /// What the leaf says.
    pub info: CertInfo,
    /// The leaf then the intermediates, as PEM: what `cert.pem` holds and the listener sends.
    /// A self-signed root given in the chain is left out (clients must already hold it).
    pub cert_pem: String,
    /// The private key, as PEM (only the key, whatever else its file held).
    pub key_pem: String,
    /// The subject of the certificate the chain was verified up to; `None` when only a leaf
    /// issued by someone else was given, so there was nothing to verify it against.
    pub verified_to: Option<String>,
}

/// Checks that `cert_pem` (leaf first, then any intermediates), `key_pem` and the optional
/// `chain_pem` (more intermediates, optionally ending in the root) can serve `public_names`
/// at `now`, and returns what to write. Checked in this order, the first failure returned:
/// every input parses; the leaf is within its validity; the key belongs to the leaf; the leaf
/// covers every public name; the chain verifies.
///
/// The chain is verified with webpki as a client would, for server authentication, from the
/// leaf through the intermediates to a trust anchor: a self-signed certificate among those
/// given, else the last one given (the organisation's root is often not handed out with the
/// certificate; clients hold it). A lone leaf is verified only if it is self-signed.
pub fn validate(
    cert_pem: &str,
    key_pem: &str,
    chain_pem: Option<&str>,
    public_names: &[PublicName],
    now: SystemTime,
) -> Result<Validated, CertError> {
    let mut certs = certificates(cert_pem, Part::Certificate)?;
    if certs.is_empty() {
        return Err(unreadable(Part::Certificate, "holds no certificate"));
    }
    let leaf = certs.remove(0);
    let mut extra: Vec<(CertificateDer<'static>, Part)> = certs
        .into_iter()
        .map(|cert| (cert, Part::Certificate))
        .collect();
    if let Some(chain_pem) = chain_pem {
        let chain = certificates(chain_pem, Part::Chain)?;
        if chain.is_empty() {
            return Err(unreadable(Part::Chain, "holds no certificate"));
        }
        extra.extend(chain.into_iter().map(|cert| (cert, Part::Chain)));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|err| {
        unreadable(
            Part::Key,
            &format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {err}"),
        )
    })?;

    let info = der_info(&leaf, Part::Certificate)?;
    let extra_info = extra
        .iter()
        .map(|(cert, part)| der_info(cert, *part))
        .collect::<Result<Vec<_>, _>>()?;
    let now_dt = OffsetDateTime::from(now);
    if info.not_after <= now_dt {
        return Err(CertError::Expired(day(info.not_after)));
    }
    if info.not_before > now_dt {
        return Err(CertError::NotYetValid(day(info.not_before)));
    }

    let provider = super::tls::provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|err| unreadable(Part::Key, &format!("is not a usable key: {err}")))?;
    let certified = rustls::sign::CertifiedKey::new(vec![leaf.clone()], signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::KeyMismatch);
        }
        Err(err) => {
            return Err(unreadable(
                Part::Key,
                &format!("cannot be compared with the certificate: {err}"),
            ));
        }
    }

    let missing: Vec<String> = info
        .uncovered(public_names)
        .into_iter()
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(CertError::NamesNotCovered {
            missing,
            names: info.names(),
        });
    }

    let verified_to = verify_chain(&leaf, &info, &extra, &extra_info, chain_pem.is_some(), now)?;

    let mut served = pem_block("CERTIFICATE", leaf.as_ref());
    for ((cert, _), cert_info) in extra.iter().zip(&extra_info) {
        if !self_signed(cert_info) {
            served.push_str(&pem_block("CERTIFICATE", cert.as_ref()));
        }
    }
    let key_label = match &key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    Ok(Validated {
        info,
        cert_pem: served,
        key_pem: pem_block(key_label, key.secret_der()),
        verified_to,
    })
}

/// Verifies the path from `leaf` through `extra` (see [`validate`]); returns the anchor's
/// subject, or `None` for a lone leaf issued by someone else.
fn verify_chain(
    leaf: &CertificateDer<'static>,
    leaf_info: &CertInfo,
    extra: &[(CertificateDer<'static>, Part)],
    extra_info: &[CertInfo],
    chain_given: bool,
    now: SystemTime,
) -> Result<Option<String>, CertError> {
    let part = if chain_given {
        Part::Chain
    } else {
        Part::Certificate
    };
    let anchor_at = extra_info
        .iter()
        .position(self_signed)
        .or_else(|| extra.len().checked_sub(1));
    let (anchor_der, anchor_subject, intermediates): (&CertificateDer<'_>, String, Vec<_>) =
        match anchor_at {
            Some(at) => (
                &extra[at].0,
                extra_info[at].subject.clone(),
                extra
                    .iter()
                    .enumerate()
                    .filter(|(index, _)| *index != at)
                    .map(|(_, (cert, _))| cert.clone())
                    .collect(),
            ),
            None if self_signed(leaf_info) => (leaf, leaf_info.subject.clone(), Vec::new()),
            None => return Ok(None),
        };
    let anchor = webpki::anchor_from_trusted_cert(anchor_der).map_err(|err| CertError::Chain {
        part,
        reason: format!("{anchor_subject} cannot be a trust anchor ({err})"),
    })?;
    let end_entity = webpki::EndEntityCert::try_from(leaf).map_err(|err| {
        unreadable(
            Part::Certificate,
            &format!("is not a certificate webpki accepts: {err}"),
        )
    })?;
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let algorithms = super::tls::provider().signature_verification_algorithms;
    end_entity
        .verify_for_usage(
            algorithms.all,
            &[anchor],
            &intermediates,
            UnixTime::since_unix_epoch(since_epoch),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|err| CertError::Chain {
            part,
            reason: chain_reason(&err, &leaf_info.issuer, &anchor_subject),
        })?;
    Ok(Some(anchor_subject))
}

/// A console sentence for a webpki path error.
fn chain_reason(err: &webpki::Error, issuer: &str, anchor: &str) -> String {
    use webpki::Error as E;
    match err {
        E::UnknownIssuer => format!(
            "no path from the certificate (issued by {issuer}) up to {anchor}: an intermediate \
             is missing, or a certificate given does not belong to this chain"
        ),
        E::InvalidSignatureForPublicKey => "a signature in the chain does not verify".to_owned(),
        E::CertExpired { .. } => "a certificate in the chain has expired".to_owned(),
        E::CertNotValidYet { .. } => "a certificate in the chain is not valid yet".to_owned(),
        E::RequiredEkuNotFoundContext(_) => {
            "the certificate is not for TLS servers (its extended key usage lacks serverAuth)"
                .to_owned()
        }
        E::CaUsedAsEndEntity => "the certificate is a CA certificate, not a server's".to_owned(),
        E::EndEntityUsedAsCa => {
            "a certificate in the chain is not a CA but signs the next one".to_owned()
        }
        other => format!("{other:?}"),
    }
}

/// Whether a certificate names itself as its issuer (a root, or a self-signed leaf).
fn self_signed(info: &CertInfo) -> bool {
    info.issuer == info.subject
}

/// Every CERTIFICATE block of `pem` (other blocks, such as a key, are skipped).
fn certificates(pem: &str, part: Part) -> Result<Vec<CertificateDer<'static>>, CertError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| unreadable(part, &format!("is not a PEM certificate file: {err}")))
}

/// Reads one DER certificate.
fn der_info(der: &CertificateDer<'_>, part: Part) -> Result<CertInfo, CertError> {
    use x509_parser::extensions::GeneralName;
    let (rest, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|err| {
        unreadable(
            part,
            &format!("holds a certificate that does not parse: {err}"),
        )
    })?;
    if !rest.is_empty() {
        return Err(unreadable(part, "holds a certificate with trailing bytes"));
    }
    let time = |at: &x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(at.timestamp())
            .map_err(|err| unreadable(part, &format!("holds an out-of-range date: {err}")))
    };
    let mut sans = Vec::new();
    let extension = cert.subject_alternative_name().map_err(|err| {
        unreadable(
            part,
            &format!("has an unreadable subject alternative name: {err}"),
        )
    })?;
    if let Some(extension) = extension {
        for name in &extension.value.general_names {
            match name {
                GeneralName::DNSName(dns) => sans.push(San::Dns(dns.to_ascii_lowercase())),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).map(IpAddr::from).ok(),
                        16 => <[u8; 16]>::try_from(*bytes).map(IpAddr::from).ok(),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.push(San::Ip(ip));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        sans,
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
        not_before: time(&cert.validity().not_before)?,
        not_after: time(&cert.validity().not_after)?,
    })
}

fn unreadable(part: Part, reason: &str) -> CertError {
    CertError::Unreadable {
        part,
        reason: reason.to_owned(),
    }
}

/// `YYYY-MM-DD HH:MM UTC`, for messages.
fn day(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{}-{:02}-{:02} {:02}:{:02} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// One PEM block with 64-column base64 lines.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    use time::Duration;

    use super::*;

    /// A root, an intermediate under it, and leaves issued by the intermediate.
    struct Pki {
        root: CertifiedIssuer<'static, KeyPair>,
        intermediate: CertifiedIssuer<'static, KeyPair>,
    }

    fn ca_params(name: &str) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        params
    }

    fn pki(name: &str) -> Pki {
        let root = CertifiedIssuer::self_signed(
            ca_params(&format!("{name} Root")),
            KeyPair::generate().expect("key"),
        )
        .expect("root");
        let intermediate = CertifiedIssuer::signed_by(
            ca_params(&format!("{name} Intermediate")),
            KeyPair::generate().expect("key"),
            &root,
        )
        .expect("intermediate");
        Pki { root, intermediate }
    }

    /// A leaf for `names` valid from `from` to `until` days from now: `(cert PEM, key PEM)`.
    fn leaf(
        names: &[&str],
        issuer: &Issuer<'_, KeyPair>,
        from: i64,
        until: i64,
    ) -> (String, String) {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).to_owned().try_into().expect("DNS name")),
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now + Duration::days(from);
        params.not_after = now + Duration::days(until);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    fn names(raw: &[&str]) -> Vec<PublicName> {
        raw.iter()
            .map(|name| parse_public_name(name).expect("public name"))
            .collect()
    }

    fn blocks(pem: &str) -> usize {
        pem.matches("-----BEGIN CERTIFICATE-----").count()
    }

    #[test]
    fn a_good_chain_validates_and_the_root_is_not_served() {
        let pki = pki("Org");
        let (cert, key) = leaf(
            &["chat.unit-a.example", "10.20.0.5"],
            &pki.intermediate,
            -1,
            90,
        );
        let chain = format!("{}{}", pki.intermediate.pem(), pki.root.pem());
        let wanted = names(&["chat.unit-a.example", "10.20.0.5"]);
        let ok = validate(&cert, &key, Some(&chain), &wanted, SystemTime::now()).expect("valid");
        assert_eq!(ok.verified_to.as_deref(), Some("CN=Org Root"));
        assert_eq!(blocks(&ok.cert_pem), 2, "leaf and intermediate, no root");
        assert_eq!(ok.info.issuer, "CN=Org Intermediate");
        assert_eq!(ok.info.names(), ["chat.unit-a.example", "10.20.0.5"]);
        assert!(ok.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        // What validate writes validates again, as the server will load it.
        let again = validate(&ok.cert_pem, &ok.key_pem, None, &wanted, SystemTime::now())
            .expect("the written files validate");
        assert_eq!(again.verified_to.as_deref(), Some("CN=Org Intermediate"));

        // The intermediate alone as the chain: verified up to it (clients hold the root).
        let ok = validate(
            &cert,
            &key,
            Some(&pki.intermediate.pem()),
            &wanted,
            SystemTime::now(),
        )
        .expect("valid");
        assert_eq!(ok.verified_to.as_deref(), Some("CN=Org Intermediate"));
        // A leaf alone, issued by someone else: nothing to verify it against.
        let ok = validate(&cert, &key, None, &wanted, SystemTime::now()).expect("valid");
        assert_eq!(ok.verified_to, None);
        assert_eq!(blocks(&ok.cert_pem), 1);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let pki = pki("Org");
        let (cert, _) = leaf(&["chat.unit-a.example"], &pki.intermediate, -1, 90);
        let (_, other_key) = leaf(&["chat.unit-a.example"], &pki.intermediate, -1, 90);
        let err = validate(
            &cert,
            &other_key,
            Some(&pki.intermediate.pem()),
            &names(&["chat.unit-a.example"]),
            SystemTime::now(),
        )
        .expect_err("mismatched key");
        assert_eq!(err, CertError::KeyMismatch);
        assert_eq!(err.part(), Part::Key);
    }

    #[test]
    fn an_expired_or_not_yet_valid_leaf_is_refused() {
        let pki = pki("Org");
        let wanted = names(&["chat.unit-a.example"]);
        let (cert, key) = leaf(&["chat.unit-a.example"], &pki.intermediate, -90, -1);
        let err = validate(&cert, &key, None, &wanted, SystemTime::now()).expect_err("expired");
        assert!(matches!(err, CertError::Expired(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("the certificate expired on "),
            "{err}"
        );
        assert_eq!(err.part(), Part::Certificate);

        let (cert, key) = leaf(&["chat.unit-a.example"], &pki.intermediate, 2, 90);
        let err = validate(&cert, &key, None, &wanted, SystemTime::now()).expect_err("future");
        assert!(matches!(err, CertError::NotYetValid(_)), "{err:?}");
    }

    #[test]
    fn a_leaf_for_other_names_is_refused_with_what_it_covers() {
        let pki = pki("Org");
        let (cert, key) = leaf(
            &["chat.unit-b.example", "10.20.0.9"],
            &pki.intermediate,
            -1,
            90,
        );
        let err = validate(
            &cert,
            &key,
            None,
            &names(&["chat.unit-a.example", "10.20.0.9", "10.20.0.5"]),
            SystemTime::now(),
        )
        .expect_err("wrong names");
        assert_eq!(
            err,
            CertError::NamesNotCovered {
                missing: vec!["chat.unit-a.example".to_owned(), "10.20.0.5".to_owned()],
                names: vec!["chat.unit-b.example".to_owned(), "10.20.0.9".to_owned()],
            }
        );
        assert_eq!(
            err.to_string(),
            "the certificate does not cover chat.unit-a.example, 10.20.0.5; it is for \
             chat.unit-b.example, 10.20.0.9"
        );
    }

    #[test]
    fn a_broken_chain_is_refused() {
        let pki_a = pki("Org");
        let pki_b = pki("Other");
        let wanted = names(&["chat.unit-a.example"]);
        let (cert, key) = leaf(&["chat.unit-a.example"], &pki_a.intermediate, -1, 90);
        // Another organisation's intermediate and root.
        let wrong = format!("{}{}", pki_b.intermediate.pem(), pki_b.root.pem());
        let err = validate(&cert, &key, Some(&wrong), &wanted, SystemTime::now())
            .expect_err("foreign chain");
        assert!(
            matches!(
                err,
                CertError::Chain {
                    part: Part::Chain,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("no path from the certificate"),
            "{err}"
        );
        // The right root but the intermediate missing.
        let err = validate(
            &cert,
            &key,
            Some(&pki_a.root.pem()),
            &wanted,
            SystemTime::now(),
        )
        .expect_err("missing intermediate");
        assert!(matches!(err, CertError::Chain { .. }), "{err:?}");
        // A foreign intermediate inside the certificate file itself.
        let bundled = format!("{cert}{}", pki_b.intermediate.pem());
        let err = validate(&bundled, &key, None, &wanted, SystemTime::now())
            .expect_err("foreign intermediate");
        assert!(
            matches!(
                err,
                CertError::Chain {
                    part: Part::Certificate,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn ip_sans_cover_only_ip_names() {
        let pki = pki("Org");
        let (cert, _) = leaf(
            &["10.20.0.5", "fd00::5", "unit-a.example"],
            &pki.intermediate,
            -1,
            9,
        );
        let info = cert_info(&cert).expect("info");
        assert_eq!(info.names(), ["10.20.0.5", "fd00::5", "unit-a.example"]);
        for covered in ["10.20.0.5", "[fd00::5]", "fd00:0::5", "UNIT-A.example."] {
            assert!(info.covers(&names(&[covered])[0]), "{covered}");
        }
        for not in ["10.20.0.6", "fd00::6", "chat.unit-a.example"] {
            assert!(!info.covers(&names(&[not])[0]), "{not}");
        }
        // An IP address written as a DNS SAN does not count for the address.
        assert!(!san_covers(
            &San::Dns("10.20.0.5".to_owned()),
            &PublicName::Ip("10.20.0.5".parse().expect("ip"))
        ));
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        let pki = pki("Org");
        let (cert, key) = leaf(&["*.unit-a.example"], &pki.intermediate, -1, 90);
        let info = cert_info(&cert).expect("info");
        assert!(info.covers(&names(&["chat.unit-a.example"])[0]));
        for not in [
            "unit-a.example",
            "a.chat.unit-a.example",
            "chat.unit-b.example",
        ] {
            assert!(!info.covers(&names(&[not])[0]), "{not}");
        }
        validate(
            &cert,
            &key,
            None,
            &names(&["chat.unit-a.example"]),
            SystemTime::now(),
        )
        .expect("the wildcard covers it");
        assert!(!dns_matches("*.example", "unit.example"), "too broad");
        assert!(!dns_matches("c*.unit-a.example", "chat.unit-a.example"));
        assert!(!dns_matches("*.*.example", "a.b.example"));
        assert!(dns_matches("chat.unit-a.example.", "chat.unit-a.example"));
    }

    #[test]
    fn the_unit_ca_leaf_validates_against_the_unit_ca() {
        let dir = std::env::temp_dir().join(format!(
            "outpost-client-cert-{}",
            crate::util::random_string(8)
        ));
        super::super::tls::generate(&dir, "unit-a.example", &["10.20.0.5:8448".to_owned()])
            .expect("generates");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("reads");
        let ok = validate(
            &read("cert.pem"),
            &read("key.pem"),
            Some(&read("ca.pem")),
            &names(&["unit-a.example", "10.20.0.5"]),
            SystemTime::now(),
        )
        .expect("valid");
        assert_eq!(
            ok.verified_to.as_deref(),
            Some("CN=Outpost unit CA unit-a.example, O=Outpost")
        );
        let info = cert_info(&read("cert.pem")).expect("info");
        assert_eq!(info.issuer, "CN=Outpost unit CA unit-a.example, O=Outpost");
        assert!(info.days_left(OffsetDateTime::now_utc()) > 365);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_ca_fingerprint_is_the_sha256_of_the_der_in_colon_hex() {
        use sha2::Digest;
        let pki = pki("Org");
        let fingerprint = ca_fingerprint(&pki.root.pem()).expect("fingerprint");
        assert_eq!(fingerprint.len(), 32 * 3 - 1);
        assert!(
            fingerprint.split(':').all(|pair| pair.len() == 2
                && pair
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())),
            "{fingerprint}"
        );
        let digest = sha2::Sha256::digest(pki.root.der().as_ref());
        assert_eq!(fingerprint, colon_hex(&digest));
        assert_eq!(colon_hex(&[0x0a, 0xff, 0x10]), "0A:FF:10");
        assert!(ca_fingerprint("not a certificate").is_err());
    }

    #[test]
    fn unreadable_inputs_name_their_part() {
        let pki = pki("Org");
        let (cert, key) = leaf(&["chat.unit-a.example"], &pki.intermediate, -1, 90);
        let wanted = names(&["chat.unit-a.example"]);
        let err = validate(&key, &key, None, &wanted, SystemTime::now()).expect_err("no cert");
        assert_eq!(err.part(), Part::Certificate);
        let err = validate(&cert, &cert, None, &wanted, SystemTime::now()).expect_err("no key");
        assert_eq!(err.part(), Part::Key);
        let err =
            validate(&cert, &key, Some(&key), &wanted, SystemTime::now()).expect_err("empty chain");
        assert_eq!(err.part(), Part::Chain);
        let mangled = cert.replace("MII", "MIJ");
        assert!(validate(&mangled, &key, None, &wanted, SystemTime::now()).is_err());
    }

    #[test]
    fn public_names_are_dns_names_or_addresses() {
        assert_eq!(
            parse_public_name(" Chat.Unit-A.example. "),
            Ok(PublicName::Dns("chat.unit-a.example".to_owned()))
        );
        assert_eq!(
            parse_public_name("[fd00::5]"),
            Ok(PublicName::Ip("fd00::5".parse().expect("ip")))
        );
        assert_eq!(
            parse_public_name("*.Unit-A.example"),
            Ok(PublicName::Dns("*.unit-a.example".to_owned()))
        );
        assert!(dns_matches("*.unit-a.example", "*.unit-a.example"));
        assert!(!dns_matches("chat.unit-a.example", "*.unit-a.example"));
        for bad in [
            "",
            "*",
            "a.*.example",
            "chat_unit",
            "0.0.0.0",
            "a..b",
            "-a.example",
        ] {
            assert!(parse_public_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
