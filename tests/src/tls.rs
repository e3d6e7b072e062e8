//! TLS clients for the client listener: a blocking rustls connection for handshake-level
//! checks (which CA, which name, which certificate was served) and HTTP/1.1 on it, and a hyper
//! client for requests over HTTP/2 or HTTP/1.1 as ALPN chooses; plus certificates made with
//! rcgen for tests that bring their own PKI.

use crate::Reply;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A blocking TLS connection to the server.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A rustls client configuration trusting only the CA in `ca_pem`, offering `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a CA certificate rustls accepts");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Connects to `addr` and completes a TLS handshake for `name` under `config`; the error is
/// the handshake's (an unknown issuer, a name the certificate does not cover, ...).
pub fn tls_connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let name = ServerName::try_from(name.to_owned())
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// The DER of the leaf certificate the server presented.
pub fn served_leaf(stream: &TlsStream) -> Vec<u8> {
    stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presented a certificate")
        .to_vec()
}

/// Writes one HTTP/1.1 request (`head` without the blank line; `Content-Length` is added)
/// on a TLS connection, without reading the answer.
pub fn send_request(stream: &mut TlsStream, head: &str, body: &[u8]) -> std::io::Result<()> {
    let request = format!("{head}\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Reads one complete HTTP/1.1 answer from a TLS connection.
pub fn read_reply(stream: &mut TlsStream) -> std::io::Result<Reply> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !crate::raw::response_complete(&data) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(err) => return Err(err),
        }
    }
    crate::raw::parse_response(&data).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&data)),
        )
    })
}

/// An async TLS connection to `addr` for `localhost` under `config` (inside a tokio runtime),
/// and whether the server chose HTTP/2 through ALPN.
pub async fn async_tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (tokio_rustls::client::TlsStream<tokio::net::TcpStream>, bool) {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let name = ServerName::try_from("localhost").expect("a name");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    (tls, h2)
}

/// One `GET path` through hyper over a new TLS connection offering `alpn`, with an optional
/// access token: the HTTP version spoken, the status and the body.
pub fn hyper_get(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
    path: &str,
    token: Option<&str>,
) -> (hyper::Version, u16, Vec<u8>) {
    use http_body_util::BodyExt;
    let config = client_config(ca_pem, alpn);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let (tls, h2) = async_tls_connect(addr, config).await;
        let io = hyper_util::rt::TokioIo::new(tls);
        let mut request = hyper::Request::get(format!("https://localhost:{}{path}", addr.port()));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if !h2 {
            request = request.header("Host", format!("localhost:{}", addr.port()));
        }
        let request = request
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .expect("a request");
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .expect("HTTP/2 handshake");
            tokio::spawn(conn);
            sender.send_request(request).await.expect("HTTP/2 request")
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("HTTP/1.1 handshake");
            tokio::spawn(conn);
            sender
                .send_request(request)
                .await
                .expect("HTTP/1.1 request")
        };
        let version = response.version();
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body")
            .to_bytes()
            .to_vec();
        (version, status, body)
    })
}

/// A CA and certificates it issues, made with rcgen for tests that bring their own PKI.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM).
    pub pem: String,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses): its PEM and its key's.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        for name in names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName((*name).try_into().expect("a DNS name")),
            });
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        (cert.pem(), key.serialize_pem())
    }
}
