//! TLS on the client listener: where its certificate lives, issuing one from the unit CA,
//! loading an imported one, the resolver that lets a reload swap the certificate under the
//! running listener, and the daily renewal check.
//!
//! Two sources (`listen.tls`):
//! - `unit-ca`: the server issues a leaf from the unit CA (`<data_dir>/tls/ca.pem` + `ca.key`,
//!   the CA [`super::tls`] makes) for `listen.public_names` into `<data_dir>/tls/client/`
//!   (`cert.pem` holds the leaf then the CA, `key.pem` is 0600). It reissues at start, on a
//!   reload and once a day when the leaf is missing, does not cover the names, no longer
//!   chains to the CA, or expires within [`RENEW_BEFORE_DAYS`].
//! - `imported`: `<data_dir>/tls/client-imported/` (`cert.pem` leaf first, then
//!   intermediates; `key.pem`), written only by `appliance tls client import`, which validates
//!   the whole chain first. The server reads them and never writes them.
//!
//! Either way the server checks what it loads with [`client_cert::validate`] (the key matches
//! the leaf, the leaf covers every public name and is valid now, the chain in the file
//! verifies) and refuses to start on a bad pair, or keeps the old one on a
//! bad reload. A reload swaps the certificate in [`Resolver`]: connections already open keep
//! the session they negotiated, new handshakes get the new certificate, none is dropped.
//!
//! The listener offers TLS 1.3 and 1.2 with rustls's ring suites only (ECDHE key exchange,
//! AEAD ciphers: AES-GCM and ChaCha20-Poly1305; no CBC, no RSA key exchange) and ALPN `h2`
//! then `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DnType, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::client_cert;
use super::tls::{self, TlsError};
use crate::config::{ClientTlsMode, Config};

/// The unit-CA-issued client certificate's folder, inside `<data_dir>/tls/`.
pub const ISSUED_DIR: &str = "client";
/// The imported client certificate's folder, inside `<data_dir>/tls/`.
pub const IMPORTED_DIR: &str = "client-imported";
/// The certificate chain file (leaf first) in either folder.
pub const CERT: &str = "cert.pem";
/// The private key file in either folder.
pub const KEY: &str = "key.pem";
/// A certificate is renewed (unit CA) or warned about (imported) this many days before it
/// expires.
pub const RENEW_BEFORE_DAYS: u64 = 30;
/// Validity of a leaf issued from the unit CA: under Apple's 398-day limit for TLS server
/// certificates, so iOS and macOS clients accept it.
const LEAF_VALIDITY_DAYS: i64 = 397;
/// How often the renewal check runs.
const CHECK_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// The folder holding the client certificate of `mode` (`None` with TLS off).
pub fn cert_dir(data_dir: &Path, mode: ClientTlsMode) -> Option<PathBuf> {
    let folder = match mode {
        ClientTlsMode::Off => return None,
        ClientTlsMode::UnitCa => ISSUED_DIR,
        ClientTlsMode::Imported => IMPORTED_DIR,
    };
    Some(data_dir.join(tls::TLS_DIR).join(folder))
}

/// What a reload reports, and what `POST /v1/tls/reload` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertSummary {
    /// The DNS names and IP addresses the served certificate is valid for.
    pub names: Vec<String>,
    /// Who issued it, as a distinguished name (`CN=Outpost unit CA …, O=Outpost`).
    pub issuer: String,
    /// When it expires, in milliseconds since the Unix epoch.
    pub not_after_ms: i64,
}

/// The certificate new handshakes get; [`ClientTls::reload`] swaps it.
#[derive(Debug)]
pub struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        ))
    }
}

/// The client listener's TLS state: the configuration to serve with and what reloads it.
pub struct ClientTls {
    /// Changed only by a reload that switches mode, under `reloading`.
    source: RwLock<Source>,
    resolver: Arc<Resolver>,
    server_config: Arc<rustls::ServerConfig>,
    current: RwLock<CertSummary>,
    /// Serialises reloads (SIGHUP, the admin socket, the daily check), which may issue.
    reloading: std::sync::Mutex<()>,
}

impl ClientTls {
    /// Issues (unit CA, when due) and loads the client certificate; `Ok(None)` with TLS off.
    /// Fails with one line saying which file is wrong and why.
    pub fn start(config: &Config) -> Result<Option<Arc<Self>>, TlsError> {
        if config.client_tls == ClientTlsMode::Off {
            return Ok(None);
        }
        Self::from_source(Source {
            mode: config.client_tls,
            data_dir: config.data_dir.clone(),
            server_name: config.server_name.to_string(),
            names: config.public_names.clone(),
        })
        .map(Some)
    }

    fn from_source(source: Source) -> Result<Arc<Self>, TlsError> {
        let (key, summary) = source.prepare()?;
        let resolver = Arc::new(Resolver(RwLock::new(Arc::new(key))));
        let mut server_config = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            source: RwLock::new(source),
            resolver,
            server_config: Arc::new(server_config),
            current: RwLock::new(summary),
            reloading: std::sync::Mutex::new(()),
        }))
    }

    /// The rustls configuration of the client listener.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server_config)
    }

    /// The certificate being served.
    pub fn current(&self) -> CertSummary {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Re-reads the certificate files (reissuing from the unit CA first when due) and serves
    /// them to new handshakes; with `mode`, those of that mode from now on (unit CA or
    /// imported: the listener speaks TLS either way, so no restart is needed). On failure the
    /// old certificate and mode stay in service.
    pub fn reload(&self, mode: Option<ClientTlsMode>) -> Result<CertSummary, TlsError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if mode == Some(ClientTlsMode::Off) {
            return Err(TlsError::Pem(
                "the client listener cannot switch to plain HTTP while it runs; restart it"
                    .to_owned(),
            ));
        }
        let mut source = self
            .source
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(mode) = mode {
            source.mode = mode;
        }
        let (key, summary) = source.prepare()?;
        *self
            .source
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = source;
        *self
            .resolver
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = summary.clone();
        tracing::info!(
            names = ?summary.names,
            issuer = %summary.issuer,
            not_after_ms = summary.not_after_ms,
            "client TLS certificate loaded"
        );
        Ok(summary)
    }

    /// Reloads once a day, which reissues a unit-CA certificate that is due, and warns about
    /// an imported one that expires soon; until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(CHECK_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: start has just checked.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = crate::util::stopped(&mut shutdown) => break,
            }
            let this = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || this.daily_check()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(error = %err, "client TLS renewal check failed"),
                Err(err) => tracing::error!(error = %err, "client TLS renewal task failed"),
            }
        }
    }

    fn daily_check(&self) -> Result<(), TlsError> {
        let before = self.current();
        let after = self.reload(None)?;
        let left_ms = after.not_after_ms - crate::util::now_ms();
        if left_ms < (RENEW_BEFORE_DAYS * 24 * 60 * 60 * 1000) as i64 {
            tracing::warn!(
                days_left = left_ms / (24 * 60 * 60 * 1000),
                "the client TLS certificate expires soon; import a new one with \
                 `appliance tls client import`"
            );
        } else if after != before {
            tracing::info!("client TLS certificate renewed");
        }
        Ok(())
    }
}

/// Where the certificate comes from and what it must cover.
#[derive(Clone)]
struct Source {
    mode: ClientTlsMode,
    data_dir: PathBuf,
    server_name: String,
    names: Vec<String>,
}

impl Source {
    /// Issues from the unit CA when due, then loads and checks the files.
    fn prepare(&self) -> Result<(CertifiedKey, CertSummary), TlsError> {
        let dir = cert_dir(&self.data_dir, self.mode)
            .ok_or_else(|| TlsError::Pem("client TLS is off".to_owned()))?;
        if self.mode == ClientTlsMode::UnitCa {
            let ca_pem = read(&self.data_dir.join(tls::TLS_DIR).join(tls::CA_CERT))?;
            if let Some(reason) = issue_reason(&dir, &ca_pem, &self.names) {
                issue(&self.data_dir, &self.server_name, &self.names)?;
                tracing::info!(%reason, names = ?self.names, "issued a client TLS certificate from the unit CA");
            }
        }
        load(&dir, &self.names)
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The name a public name is checked as: a wildcard `*.x` as some host under `x`.
fn check_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    let probe = match name.strip_prefix("*.") {
        Some(rest) => format!("outpost-wildcard-probe.{rest}"),
        None => name.to_owned(),
    };
    ServerName::try_from(probe).map_err(|err| TlsError::Pem(format!("public name {name:?}: {err}")))
}

/// Why the issued certificate in `dir` must be reissued from the CA `ca_pem`, or `None` when
/// it is fine: missing or unreadable, its key not matching, not chaining to the CA, not
/// covering every name, or expiring within [`RENEW_BEFORE_DAYS`].
fn issue_reason(dir: &Path, ca_pem: &str, names: &[String]) -> Option<String> {
    let (chain, key) = match read_pair(dir) {
        Ok(pair) => pair,
        Err(err) => return Some(format!("no usable certificate ({err})")),
    };
    if let Err(err) = CertifiedKey::from_der(chain.clone(), key, &tls::provider()) {
        return Some(format!("key does not match ({err})"));
    }
    let soon = std::time::SystemTime::now() + Duration::from_secs(RENEW_BEFORE_DAYS * 86_400);
    let at = UnixTime::since_unix_epoch(
        soon.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    for name in names {
        if let Err(err) = verify_against(ca_pem, &chain, name, at) {
            return Some(format!(
                "not valid for {name} in {RENEW_BEFORE_DAYS} days ({err})"
            ));
        }
    }
    None
}

/// Checks that `chain` (leaf first) verifies against the CA `ca_pem` for `name` at `at`.
fn verify_against(
    ca_pem: &str,
    chain: &[CertificateDer<'static>],
    name: &str,
    at: UnixTime,
) -> Result<(), TlsError> {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|err| TlsError::Pem(format!("{}: {err}", tls::CA_CERT)))?)?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls::provider())
        .build()
        .map_err(|err| TlsError::Pem(format!("{}: {err}", tls::CA_CERT)))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| TlsError::Pem(format!("{CERT} holds no certificate")))?;
    verifier
        .verify_server_cert(leaf, intermediates, &check_name(name)?, &[], at)
        .map(|_| ())
        .map_err(TlsError::Rustls)
}

/// Issues a leaf for `names` from the unit CA into `<data_dir>/tls/client/`, checked to chain
/// to the CA for every name before anything is written. It expires after
/// [`LEAF_VALIDITY_DAYS`] or with the CA, whichever is first.
pub fn issue(data_dir: &Path, server_name: &str, names: &[String]) -> Result<(), TlsError> {
    issue_valid_for(data_dir, server_name, names, LEAF_VALIDITY_DAYS)
}

/// [`issue`] with a validity of `days` (capped by the CA's), which tests shorten.
fn issue_valid_for(
    data_dir: &Path,
    server_name: &str,
    names: &[String],
    days: i64,
) -> Result<(), TlsError> {
    use time::{Duration as Days, OffsetDateTime};
    let tls_dir = data_dir.join(tls::TLS_DIR);
    let ca_pem = read(&tls_dir.join(tls::CA_CERT))?;
    let ca_key = KeyPair::from_pem(&read(&tls_dir.join(tls::CA_KEY))?)?;
    let ca_not_after = tls::pem_not_after(&ca_pem)?;
    let now = OffsetDateTime::now_utc();
    if ca_not_after <= now {
        return Err(TlsError::Pem(format!(
            "the unit CA expired on {ca_not_after}; it cannot issue a client certificate"
        )));
    }
    let first = names
        .first()
        .ok_or_else(|| TlsError::Pem("no public name to issue a certificate for".to_owned()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, first.clone());
    for name in names {
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into()?),
        };
        params.subject_alt_names.push(san);
    }
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    // A day of slack for a client whose clock is slightly behind.
    params.not_before = now - Days::days(1);
    params.not_after = (now + Days::days(days)).min(ca_not_after);
    let issuer = rcgen::Issuer::new(tls::ca_params(server_name), ca_key);
    let leaf_key = KeyPair::generate()?;
    let cert = params.signed_by(&leaf_key, &issuer)?;
    let chain = vec![cert.der().clone()];
    for name in names {
        verify_against(&ca_pem, &chain, name, UnixTime::now()).map_err(|err| {
            TlsError::Pem(format!(
                "the issued certificate does not verify against the unit CA for {name} ({err}); \
                 nothing was changed"
            ))
        })?;
    }
    let dir = tls_dir.join(ISSUED_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| TlsError::Io {
        path: dir.clone(),
        source,
    })?;
    // The key first: a reload between the two writes sees a mismatched pair and keeps the
    // old certificate, never a certificate without its key.
    tls::write_private(&dir.join(KEY), &leaf_key.serialize_pem())?;
    tls::write_public(&dir.join(CERT), &format!("{}{}", cert.pem(), ca_pem))?;
    Ok(())
}

/// Reads `cert.pem` (leaf first) and `key.pem` from `dir`.
fn read_pair(
    dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_path = dir.join(CERT);
    let key_path = dir.join(KEY);
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(read(&cert_path)?.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|err| TlsError::Pem(format!("{}: {err}", cert_path.display())))?;
    if chain.is_empty() {
        return Err(TlsError::Pem(format!(
            "{}: no certificate in it",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(read(&key_path)?.as_bytes())
        .map_err(|err| TlsError::Pem(format!("{}: {err}", key_path.display())))?;
    Ok((chain, key))
}

/// Loads and checks the pair in `dir` with [`client_cert::validate`], the checks `appliance
/// tls client import` makes: the leaf is valid now, the key belongs to it, it covers every
/// public name, and the chain in the file verifies. An error names the file at fault.
fn load(dir: &Path, names: &[String]) -> Result<(CertifiedKey, CertSummary), TlsError> {
    let cert_path = dir.join(CERT);
    let key_path = dir.join(KEY);
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let wanted = names
        .iter()
        .map(|name| client_cert::parse_public_name(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Pem)?;
    let validated = client_cert::validate(&cert_pem, &key_pem, None, &wanted, SystemTime::now())
        .map_err(|err| {
            let file = match err.part() {
                client_cert::Part::Key => &key_path,
                _ => &cert_path,
            };
            TlsError::Pem(format!("{}: {err}", file.display()))
        })?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(validated.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|err| TlsError::Pem(format!("{}: {err}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_slice(validated.key_pem.as_bytes())
        .map_err(|err| TlsError::Pem(format!("{}: {err}", key_path.display())))?;
    let certified = CertifiedKey::from_der(chain, key, &tls::provider())?;
    let info = validated.info;
    let summary = CertSummary {
        names: info.names(),
        issuer: info.issuer.clone(),
        not_after_ms: (info.not_after.unix_timestamp_nanos() / 1_000_000) as i64,
    };
    Ok((certified, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!(
            "outpost-client-tls-{}",
            crate::util::random_string(8)
        ))
    }

    #[test]
    fn issues_for_every_name_and_reissues_only_when_due() {
        let data_dir = temp_dir();
        tls::TlsIdentity::load_or_create(&data_dir, "unit-a.example").expect("unit CA");
        let names = vec!["chat.unit-a.example".to_owned(), "10.20.0.5".to_owned()];
        let dir = data_dir.join(tls::TLS_DIR).join(ISSUED_DIR);
        let ca_pem = read(&data_dir.join(tls::TLS_DIR).join(tls::CA_CERT)).expect("CA");
        assert!(issue_reason(&dir, &ca_pem, &names).is_some(), "missing");
        issue(&data_dir, "unit-a.example", &names).expect("issues");
        assert_eq!(issue_reason(&dir, &ca_pem, &names), None);
        let (_, summary) = load(&dir, &names).expect("loads");
        let days = (summary.not_after_ms - crate::util::now_ms()) / 86_400_000;
        assert!((395..=397).contains(&days), "{days} days");
        let more = vec!["chat.unit-a.example".to_owned(), "10.20.0.6".to_owned()];
        assert!(issue_reason(&dir, &ca_pem, &more).is_some(), "a new name");
        assert!(load(&dir, &more).is_err(), "an uncovered name is refused");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(KEY))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another unit's key does not match this certificate.
        let other = temp_dir();
        tls::TlsIdentity::load_or_create(&other, "unit-b.example").expect("other CA");
        issue(&other, "unit-b.example", &names).expect("issues");
        std::fs::copy(other.join("tls/client/key.pem"), dir.join(KEY)).expect("copy");
        assert!(load(&dir, &names).is_err(), "mismatched key refused");
        assert!(issue_reason(&dir, &ca_pem, &names).is_some());
        let _ = std::fs::remove_dir_all(data_dir);
        let _ = std::fs::remove_dir_all(other);
    }

    #[test]
    fn the_daily_check_renews_a_certificate_that_expires_within_30_days() {
        let data_dir = temp_dir();
        tls::TlsIdentity::load_or_create(&data_dir, "unit-a.example").expect("unit CA");
        let names = vec!["chat.unit-a.example".to_owned()];
        let tls = ClientTls::from_source(Source {
            mode: ClientTlsMode::UnitCa,
            data_dir: data_dir.clone(),
            server_name: "unit-a.example".to_owned(),
            names: names.clone(),
        })
        .expect("starts");
        let days_left =
            |summary: &CertSummary| (summary.not_after_ms - crate::util::now_ms()) / 86_400_000;
        assert!(days_left(&tls.current()) >= 395);
        let served = |tls: &ClientTls| {
            tls.resolver.0.read().expect("resolver").cert[0]
                .as_ref()
                .to_vec()
        };
        let first = served(&tls);

        // A day's check with nothing due changes nothing.
        tls.daily_check().expect("check");
        assert_eq!(served(&tls), first, "not reissued while valid for long");

        // 377 days on, the certificate in service has 20 days left: the next daily check
        // reissues it and serves the new one.
        issue_valid_for(&data_dir, "unit-a.example", &names, 20).expect("short leaf");
        *tls.resolver.0.write().expect("resolver") = Arc::new(
            load(&data_dir.join(tls::TLS_DIR).join(ISSUED_DIR), &names)
                .expect("short leaf loads")
                .0,
        );
        let short = served(&tls);
        tls.daily_check().expect("check");
        let renewed = served(&tls);
        assert_ne!(renewed, short, "the daily check served a new certificate");
        assert!(days_left(&tls.current()) >= 395, "{:?}", tls.current());
        let _ = std::fs::remove_dir_all(data_dir);
    }
}
