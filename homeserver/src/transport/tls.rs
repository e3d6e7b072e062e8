//! The unit's TLS identity and the rustls configurations built from it and from peer cards.
//!
//! Every unit makes its own CA and a leaf certificate for its server name on first start (or in
//! `appliance setup`), under `<data_dir>/tls/`. Peers trust exactly the CA in our peer card, and
//! we trust exactly the CA in theirs, or the key pinned in a card written by hand (an SPKI
//! pin, for servers with a self-signed certificate): no system trust store, no public CA, ever.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::matrix::peer_card::{TlsAnchor, TlsTrust};

/// Files of the TLS identity, relative to the data dir.
pub const TLS_DIR: &str = "tls";

/// Why the TLS identity could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file did not hold what it should.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The unit's CA and leaf, as loaded from disk.
pub struct TlsIdentity {
    /// The unit CA certificate (PEM), published in our peer card.
    pub ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The host part of a server name (without port), which certificates are issued for.
pub fn server_host(server_name: &str) -> &str {
    if let Some(rest) = server_name.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match server_name.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => server_name,
    }
}

/// The CA certificate file inside `tls/`.
pub const CA_CERT: &str = "ca.pem";
/// The CA private key file inside `tls/`.
pub const CA_KEY: &str = "ca.key";
/// The leaf certificate file inside `tls/`.
pub const CERT: &str = "cert.pem";
/// The leaf private key file inside `tls/`.
pub const KEY: &str = "key.pem";

/// How long the unit CA is valid: it is pinned by peers, so it should outlive the box.
const CA_VALIDITY_DAYS: i64 = 20 * 365;
/// How long the leaf certificate is valid.
const LEAF_VALIDITY_DAYS: i64 = 5 * 365;

pub(crate) fn write_public(path: &Path, contents: &str) -> Result<(), TlsError> {
    write_private(path, contents)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|source| {
        TlsError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// The unit CA's parameters. Its subject (and, from the key, its key identifier) is also what
/// [`renew`] (and the client listener's issuance in [`super::client_tls`]) rebuilds to sign a new leaf with the existing CA key, so the two must not drift.
pub(crate) fn ca_params(server_name: &str) -> CertificateParams {
    use rcgen::DistinguishedName;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, format!("Outpost unit CA {server_name}"));
    ca.distinguished_name
        .push(DnType::OrganizationName, "Outpost");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca
}

/// Generates the unit CA (ECDSA P-256) and a leaf certificate for the host of `server_name`
/// plus every endpoint host, and writes the four PEM files into `dir` (keys 0600). This is
/// the one implementation: the homeserver's first start and `appliance setup` both use it.
pub fn generate(dir: &Path, server_name: &str, endpoint_hosts: &[String]) -> Result<(), TlsError> {
    use rcgen::CertifiedIssuer;
    use time::{Duration, OffsetDateTime};
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let now = OffsetDateTime::now_utc();
    // A day of slack for clocks that are slightly behind on a box without network time.
    let not_before = now - Duration::days(1);

    let ca_key = KeyPair::generate()?;
    let mut ca = ca_params(server_name);
    ca.not_before = not_before;
    ca.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let issuer = CertifiedIssuer::self_signed(ca, ca_key)?;

    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params(
        server_name,
        endpoint_hosts,
        not_before,
        now + Duration::days(LEAF_VALIDITY_DAYS),
    )?;
    let cert = leaf.signed_by(&leaf_key, &issuer)?;

    write_private(&dir.join(CA_KEY), &issuer.key().serialize_pem())?;
    write_public(&dir.join(CA_CERT), &issuer.pem())?;
    write_private(&dir.join(KEY), &leaf_key.serialize_pem())?;
    write_public(&dir.join(CERT), &cert.pem())?;
    Ok(())
}

/// The leaf certificate's parameters: for the host of `server_name` plus every endpoint host,
/// usable to serve and to connect.
fn leaf_params(
    server_name: &str,
    endpoint_hosts: &[String],
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<CertificateParams, TlsError> {
    use rcgen::{DistinguishedName, ExtendedKeyUsagePurpose, SanType};
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, server_name.to_owned());
    let mut hosts: Vec<&str> = vec![server_host(server_name)];
    hosts.extend(endpoint_hosts.iter().map(|endpoint| server_host(endpoint)));
    hosts.sort_unstable();
    hosts.dedup();
    for host in hosts {
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_owned().try_into()?),
        };
        leaf.subject_alt_names.push(san);
    }
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // The same identity serves and connects.
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    Ok(leaf)
}

/// Replaces the leaf certificate and key in `dir` with new ones signed by the existing unit CA
/// (`ca.pem` + `ca.key`), for the same names as [`generate`]. The CA is unchanged, so peers
/// keep trusting the unit with the card they have. The new leaf is checked to chain to
/// `ca.pem` (webpki, as peers check it) before anything is written; it expires after
/// [`LEAF_VALIDITY_DAYS`] or with the CA, whichever is first. Returns the new expiry.
///
/// The CA's issuer parameters are rebuilt from [`ca_params`] rather than parsed from
/// `ca.pem` (that would need rcgen's x509-parser); the chain check is what proves they match.
pub fn renew(
    dir: &Path,
    server_name: &str,
    endpoint_hosts: &[String],
) -> Result<time::OffsetDateTime, TlsError> {
    use time::{Duration, OffsetDateTime};
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| TlsError::Io { path, source })
    };
    let ca_pem = read(CA_CERT)?;
    let ca_key = KeyPair::from_pem(&read(CA_KEY)?)?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|err| TlsError::Pem(format!("{CA_CERT}: {err}")))?;
    let ca_not_after = not_after(&ca_der)?;
    let now = OffsetDateTime::now_utc();
    if ca_not_after <= now {
        return Err(TlsError::Pem(format!(
            "the unit CA expired on {ca_not_after}; a new CA means a new peer card for every peer"
        )));
    }
    let issuer = rcgen::Issuer::new(ca_params(server_name), ca_key);
    let leaf_key = KeyPair::generate()?;
    let expires = (now + Duration::days(LEAF_VALIDITY_DAYS)).min(ca_not_after);
    let leaf = leaf_params(
        server_name,
        endpoint_hosts,
        now - Duration::days(1),
        expires,
    )?;
    let cert = leaf.signed_by(&leaf_key, &issuer)?;
    check_chain(&ca_pem, cert.der(), server_name)?;
    write_private(&dir.join(KEY), &leaf_key.serialize_pem())?;
    write_public(&dir.join(CERT), &cert.pem())?;
    Ok(expires)
}

/// Fails unless `leaf` chains to `ca_pem` and is valid for the host of `server_name` now: the
/// check a peer's client makes.
fn check_chain(ca_pem: &str, leaf: &CertificateDer<'_>, server_name: &str) -> Result<(), TlsError> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|err| TlsError::Pem(format!("{CA_CERT}: {err}")))?)?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|err| TlsError::Pem(format!("{CA_CERT}: {err}")))?;
    let name = ServerName::try_from(server_host(server_name).to_owned())
        .map_err(|err| TlsError::Pem(format!("server name: {err}")))?;
    verifier
        .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|err| {
            TlsError::Pem(format!(
                "the new certificate does not chain to the unit CA ({err}); nothing was changed"
            ))
        })
}

/// When a certificate stops being valid: its `notAfter`, read with a small DER walk
/// (Certificate → TBSCertificate → validity), enough for expiry warnings without an X.509
/// parser.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<time::OffsetDateTime, TlsError> {
    let bad = |what: &str| TlsError::Pem(format!("certificate: {what}"));
    let (certificate, _) = der_element(cert.as_ref(), 0x30).ok_or_else(|| bad("not a SEQUENCE"))?;
    let (mut tbs, _) = der_element(certificate, 0x30).ok_or_else(|| bad("no TBSCertificate"))?;
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs, 0xa0).ok_or_else(|| bad("bad version"))?.1;
    }
    for (tag, what) in [(0x02, "serial"), (0x30, "signature"), (0x30, "issuer")] {
        tbs = der_element(tbs, tag).ok_or_else(|| bad(what))?.1;
    }
    let (validity, _) = der_element(tbs, 0x30).ok_or_else(|| bad("no validity"))?;
    let rest = skip_time(validity).ok_or_else(|| bad("bad notBefore"))?;
    let (tag, body) = match rest.first() {
        Some(&tag @ (0x17 | 0x18)) => (
            tag,
            der_element(rest, tag).ok_or_else(|| bad("notAfter"))?.0,
        ),
        _ => return Err(bad("no notAfter")),
    };
    parse_der_time(tag, body).ok_or_else(|| bad("unreadable notAfter"))
}

/// Splits one DER element with tag `tag` off the front of `data`: `(contents, rest)`.
fn der_element(data: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, data) = data.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, mut data) = data.split_first()?;
    let len = if len_byte < 0x80 {
        usize::from(len_byte)
    } else {
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > 4 || data.len() < count {
            return None;
        }
        let (bytes, rest) = data.split_at(count);
        data = rest;
        bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    (data.len() >= len).then(|| data.split_at(len))
}

/// Skips one UTCTime or GeneralizedTime.
fn skip_time(data: &[u8]) -> Option<&[u8]> {
    let tag = *data.first()?;
    if tag != 0x17 && tag != 0x18 {
        return None;
    }
    der_element(data, tag).map(|(_, rest)| rest)
}

/// `YYMMDDHHMMSSZ` (UTCTime, tag 0x17) or `YYYYMMDDHHMMSSZ` (GeneralizedTime, 0x18).
fn parse_der_time(tag: u8, body: &[u8]) -> Option<time::OffsetDateTime> {
    let text = std::str::from_utf8(body).ok()?.strip_suffix('Z')?;
    let (year, rest) = if tag == 0x17 {
        let short: i32 = text.get(..2)?.parse().ok()?;
        // RFC 5280: 50–99 are 19xx, 00–49 are 20xx.
        (
            if short >= 50 {
                1900 + short
            } else {
                2000 + short
            },
            text.get(2..)?,
        )
    } else {
        (text.get(..4)?.parse().ok()?, text.get(4..)?)
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |at: usize| rest.get(at..at + 2)?.parse::<u8>().ok();
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
    let clock = time::Time::from_hms(field(4)?, field(6)?, field(8)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
}

/// The `notAfter` of the first certificate in a PEM file.
pub fn pem_not_after(pem: &str) -> Result<time::OffsetDateTime, TlsError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|err| TlsError::Pem(format!("certificate PEM: {err}")))?;
    not_after(&der)
}

impl TlsIdentity {
    /// Loads the identity from `<data_dir>/tls`, generating it first if there is none.
    pub fn load_or_create(data_dir: &Path, server_name: &str) -> Result<Self, TlsError> {
        let dir = data_dir.join(TLS_DIR);
        if !dir.join(CERT).exists() {
            generate(&dir, server_name, &[])?;
            tracing::info!(dir = %dir.display(), "generated the unit's TLS CA and certificate");
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Io { path, source })
        };
        let ca_pem = read("ca.pem")?;
        let cert_pem = read("cert.pem")?;
        let key_pem = read("key.pem")?;
        let mut chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|err| TlsError::Pem(format!("cert.pem: {err}")))?;
        chain.extend(
            CertificateDer::pem_slice_iter(ca_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|err| TlsError::Pem(format!("ca.pem: {err}")))?,
        );
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|err| TlsError::Pem(format!("key.pem: {err}")))?;
        Ok(Self { ca_pem, chain, key })
    }

    /// The server configuration for the federation listener.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(config))
    }
}

/// The crypto provider (ring), chosen explicitly so no process-wide default is needed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that trusts only what the peer's card names: its CA, or the one
/// certificate key it pins.
pub fn client_config_for(trust: &TlsTrust) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    match trust
        .anchor()
        .map_err(|err| TlsError::Pem(err.to_string()))?
    {
        TlsAnchor::Ca(ca_pem) => client_config_for_ca(ca_pem),
        TlsAnchor::Spki(digest) => {
            let verifier = SpkiPin {
                digest,
                algorithms: provider().signature_verification_algorithms,
            };
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            Ok(Arc::new(config))
        }
    }
}

/// A client configuration that trusts only `ca_pem` (a peer's CA from its card).
pub fn client_config_for_ca(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|err| TlsError::Pem(format!("peer CA: {err}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("peer CA PEM holds no certificate".to_owned()));
    }
    for cert in certs {
        roots.add(cert)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// SHA-256 of a certificate's DER SubjectPublicKeyInfo: the value an SPKI pin names, the same
/// as `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256`.
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], TlsError> {
    use sha2::Digest;
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|err| TlsError::Pem(format!("not an X.509 certificate: {err}")))?;
    Ok(sha2::Sha256::digest(parsed.subject_public_key_info().as_ref()).into())
}

/// Accepts exactly the certificate whose key hashes to `digest`. The pin is the whole trust
/// anchor, as with SSH host keys: the certificate's names, issuer and validity period are not
/// looked at (a self-signed certificate renewed on the same key keeps working); the handshake
/// signature is still checked, so only the holder of the pinned key gets through.
#[derive(Debug)]
struct SpkiPin {
    digest: [u8; 32],
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for SpkiPin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let digest = spki_sha256(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if digest == self.digest {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_server_names() {
        assert_eq!(server_host("unit-a.example"), "unit-a.example");
        assert_eq!(server_host("unit-a.example:8448"), "unit-a.example");
        assert_eq!(server_host("[::1]:8448"), "::1");
        assert_eq!(server_host("127.0.0.2"), "127.0.0.2");
    }

    #[test]
    fn renewed_leaf_chains_to_the_unchanged_ca() {
        let dir =
            std::env::temp_dir().join(format!("outpost-tls-{}", crate::util::random_string(8)));
        let endpoints = ["127.0.0.2:8448".to_owned()];
        generate(&dir, "unit-a.example:8448", &endpoints).expect("generates");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("reads");
        let (ca, ca_key, cert) = (read(CA_CERT), read(CA_KEY), read(CERT));
        let first_expiry = pem_not_after(&cert).expect("notAfter");
        let now = time::OffsetDateTime::now_utc();
        assert!(first_expiry > now + time::Duration::days(LEAF_VALIDITY_DAYS - 2));
        assert!(pem_not_after(&ca).expect("CA notAfter") > first_expiry);

        let expires = renew(&dir, "unit-a.example:8448", &endpoints).expect("renews");
        assert_eq!(
            (read(CA_CERT), read(CA_KEY)),
            (ca.clone(), ca_key),
            "CA unchanged"
        );
        let renewed = read(CERT);
        assert_ne!(renewed, cert);
        assert_eq!(
            pem_not_after(&renewed).expect("notAfter").unix_timestamp(),
            expires.unix_timestamp()
        );
        let der = CertificateDer::from_pem_slice(renewed.as_bytes()).expect("PEM");
        check_chain(&ca, &der, "unit-a.example:8448").expect("chains");
        check_chain(&ca, &der, "127.0.0.2").expect("valid for the endpoint address");
        TlsIdentity::load_or_create(&dir, "unit-a.example:8448")
            .expect("loads")
            .server_config()
            .expect("the new key matches the new certificate");

        // A CA made for another name does not issue for this one.
        assert!(renew(&dir, "unit-b.example", &endpoints).is_err());
        assert_eq!(read(CERT), renewed, "a failed renewal changes nothing");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn der_times_parse() {
        let at = |tag, text: &str| parse_der_time(tag, text.as_bytes()).map(|t| t.unix_timestamp());
        assert_eq!(at(0x17, "700101000000Z"), Some(0));
        assert_eq!(at(0x17, "491231235959Z"), Some(2_524_607_999));
        assert_eq!(at(0x18, "20380119031408Z"), Some(2_147_483_648));
        assert_eq!(at(0x18, "2038011903140Z"), None);
        assert_eq!(at(0x17, "701301000000Z"), None);
    }

    #[test]
    fn generated_identity_loads_and_configures() {
        let dir =
            std::env::temp_dir().join(format!("outpost-tls-{}", crate::util::random_string(8)));
        let identity = TlsIdentity::load_or_create(&dir, "unit-a.example:8448").expect("identity");
        identity.server_config().expect("server config");
        client_config_for_ca(&identity.ca_pem).expect("client config");
        let _ = std::fs::remove_dir_all(dir);
    }
}
