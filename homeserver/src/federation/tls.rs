//! The unit's TLS identity and the rustls configurations built from it and from peer cards.
//!
//! Every unit makes its own CA and a leaf certificate for its server name on first start (or in
//! `appliance setup`), under `<data_dir>/tls/`. Peers trust exactly the CA in our peer card, and
//! we trust exactly the CA in theirs: no system trust store, no public CA, ever.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
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

fn write_public(path: &Path, contents: &str) -> Result<(), TlsError> {
    write_private(path, contents)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(|source| {
        TlsError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// Generates the unit CA (ECDSA P-256) and a leaf certificate for the host of `server_name`
/// plus every endpoint host, and writes the four PEM files into `dir` (keys 0600). This is
/// the one implementation: the homeserver's first start and `appliance setup` both use it.
pub fn generate(dir: &Path, server_name: &str, endpoint_hosts: &[String]) -> Result<(), TlsError> {
    use rcgen::{CertifiedIssuer, DistinguishedName, ExtendedKeyUsagePurpose, SanType};
    use time::{Duration, OffsetDateTime};
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let now = OffsetDateTime::now_utc();
    // A day of slack for clocks that are slightly behind on a box without network time.
    let not_before = now - Duration::days(1);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, format!("Outpost unit CA {server_name}"));
    ca.distinguished_name
        .push(DnType::OrganizationName, "Outpost");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let issuer = CertifiedIssuer::self_signed(ca, ca_key)?;

    let leaf_key = KeyPair::generate()?;
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
    leaf.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
    let cert = leaf.signed_by(&leaf_key, &issuer)?;

    write_private(&dir.join(CA_KEY), &issuer.key().serialize_pem())?;
    write_public(&dir.join(CA_CERT), &issuer.pem())?;
    write_private(&dir.join(KEY), &leaf_key.serialize_pem())?;
    write_public(&dir.join(CERT), &cert.pem())?;
    Ok(())
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
    fn generated_identity_loads_and_configures() {
        let dir =
            std::env::temp_dir().join(format!("outpost-tls-{}", crate::util::random_string(8)));
        let identity = TlsIdentity::load_or_create(&dir, "unit-a.example:8448").expect("identity");
        identity.server_config().expect("server config");
        client_config_for_ca(&identity.ca_pem).expect("client config");
        let _ = std::fs::remove_dir_all(dir);
    }
}
