//! The client port's imported certificate on disk: reading the files an admin hands over,
//! checking them with the homeserver's own checks (`homeserver::transport::client_cert`)
//! into one console message naming the file at fault, and writing them into
//! `<data dir>/tls/client-imported/` as one directory swap. Used by `tls client import` and by
//! `setup` (a certificate in the provisioning file).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use homeserver::transport::client_cert::Validated;
use homeserver::transport::client_cert::{self, CertError, Part, PublicName};
use homeserver::transport::client_tls::{CERT, IMPORTED_DIR, KEY};

use crate::base::exit::Failure;

/// Largest certificate, key or chain file read: real ones are a few KiB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The files of an import, as the admin named them.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// The certificate, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// More of the chain.
    pub chain: Option<PathBuf>,
}

/// The imported certificate's folder inside the unit's `tls/` folder.
pub fn imported_dir(tls_dir: &Path) -> PathBuf {
    tls_dir.join(IMPORTED_DIR)
}

/// Reads one input file, refusing what cannot be a PEM file.
fn read_pem(path: &Path) -> Result<String, Failure> {
    let meta = std::fs::metadata(path).map_err(|err| Failure::io("cannot read", path, err))?;
    if !meta.is_file() || meta.len() > MAX_PEM_BYTES {
        return Err(Failure::rejected(format!(
            "{}: not a PEM file (a regular file of at most 1 MiB); nothing was changed",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|err| Failure::io("cannot read", path, err))?;
    String::from_utf8(bytes).map_err(|_| {
        Failure::rejected(format!(
            "{}: not a PEM file (it is binary; convert DER with `openssl x509 -inform der`); \
             nothing was changed",
            path.display()
        ))
    })
}

/// Reads and checks the files against `public_names` (already checked names) now: the key
/// belongs to the certificate, which covers every name, is valid today and chains. Refused
/// input is [`crate::base::exit::Exit::Rejected`], with the file at fault named.
pub fn check(paths: &CertPaths, public_names: &[String]) -> Result<Validated, Failure> {
    let names: Vec<PublicName> = public_names
        .iter()
        .map(|raw| client_cert::parse_public_name(raw))
        .collect::<Result<_, _>>()
        .map_err(|err| Failure::broke(format!("the public names: {err}")))?;
    let cert_pem = read_pem(&paths.cert)?;
    let key_pem = read_pem(&paths.key)?;
    let chain_pem = paths.chain.as_deref().map(read_pem).transpose()?;
    client_cert::validate(
        &cert_pem,
        &key_pem,
        chain_pem.as_deref(),
        &names,
        SystemTime::now(),
    )
    .map_err(|err| refused(paths, &err))
}

/// The console message for a refused certificate: the file at fault, what is wrong, and that
/// nothing changed.
fn refused(paths: &CertPaths, err: &CertError) -> Failure {
    let file = match err.part() {
        Part::Certificate => &paths.cert,
        Part::Key => &paths.key,
        Part::Chain => paths.chain.as_ref().unwrap_or(&paths.cert),
    };
    let detail = match err {
        CertError::KeyMismatch => format!(
            "the private key does not belong to the certificate {} (their public keys differ)",
            paths.cert.display()
        ),
        CertError::NamesNotCovered { .. } => format!(
            "{err}: users type these names (listen.public_names), so the certificate must cover \
             every one"
        ),
        other => other.to_string(),
    };
    Failure::rejected(format!("{}: {detail}; nothing was changed", file.display()))
}

/// Writes a checked certificate and key into `<tls_dir>/client-imported/` in one directory
/// swap (see [`super::replace_dir`]), owned like `tls_dir`; returns the folder.
pub fn write_imported(tls_dir: &Path, checked: &Validated) -> Result<PathBuf, Failure> {
    let dir = imported_dir(tls_dir);
    super::replace_dir(
        &dir,
        &[
            (CERT, checked.cert_pem.as_bytes(), 0o644),
            (KEY, checked.key_pem.as_bytes(), 0o600),
        ],
        tls_dir,
    )?;
    Ok(dir)
}
