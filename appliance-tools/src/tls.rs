//! The unit's TLS identity, generated on the box at setup: a self-signed unit CA and a leaf
//! certificate for the federation listener, signed by it (ECDSA P-256, which every TLS stack
//! peers may run accepts).
//!
//! Peers pin the unit CA (it goes on the peer card), so the leaf can be renewed without
//! re-exchanging cards. Nothing here is ever taken from the image or the repository.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::exit::Failure;
use crate::unit::write_file;

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

fn tls_error(err: rcgen::Error) -> Failure {
    Failure::broke(format!("generating the TLS certificate: {err}"))
}

/// Generates the CA and the leaf for `server_host` (plus every endpoint host) and writes the
/// four PEM files into `dir` (keys mode 0600, certificates 0644).
pub fn generate(dir: &Path, server_name: &str, endpoint_hosts: &[String]) -> Result<(), Failure> {
    let now = OffsetDateTime::now_utc();
    // A day of slack for clocks that are slightly behind on a box without network time.
    let not_before = now - Duration::days(1);

    let ca_key = KeyPair::generate().map_err(tls_error)?;
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
    let issuer = CertifiedIssuer::self_signed(ca, ca_key).map_err(tls_error)?;

    let leaf_key = KeyPair::generate().map_err(tls_error)?;
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, server_name.to_owned());
    let mut hosts: Vec<&str> = vec![host_of(server_name)];
    hosts.extend(endpoint_hosts.iter().map(|endpoint| host_of(endpoint)));
    hosts.sort_unstable();
    hosts.dedup();
    for host in hosts {
        let san = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_owned().try_into().map_err(tls_error)?),
        };
        leaf.subject_alt_names.push(san);
    }
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Federation TLS is mutual in spirit: the same identity serves and connects.
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
    let cert = leaf.signed_by(&leaf_key, &issuer).map_err(tls_error)?;

    std::fs::create_dir_all(dir).map_err(|err| Failure::io("cannot create", dir, err))?;
    write_file(&dir.join(CA_KEY), issuer_key_pem(&issuer).as_bytes(), 0o600)?;
    write_file(&dir.join(CA_CERT), issuer.pem().as_bytes(), 0o644)?;
    write_file(&dir.join(KEY), leaf_key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&dir.join(CERT), cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn issuer_key_pem(issuer: &CertifiedIssuer<'_, KeyPair>) -> String {
    issuer.key().serialize_pem()
}

/// The host part of `host[:port]` or `[v6]:port`.
fn host_of(name: &str) -> &str {
    if name.starts_with('[') {
        return name
            .split(']')
            .next()
            .map_or(name, |h| h.trim_start_matches('['));
    }
    match name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') => {
            host
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn hosts_lose_their_ports() {
        assert_eq!(host_of("unit-a.example:8448"), "unit-a.example");
        assert_eq!(host_of("unit-a.example"), "unit-a.example");
        assert_eq!(host_of("10.0.0.5:8448"), "10.0.0.5");
        assert_eq!(host_of("[fd00::5]:8448"), "fd00::5");
    }
}
