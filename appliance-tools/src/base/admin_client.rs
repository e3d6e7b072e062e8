//! A minimal, synchronous HTTP/1.1 client for the homeserver's admin socket.
//!
//! The CLI makes one request at a time to one local peer that always answers with a
//! `Content-Length` body, so a hand-written request over `std`'s `UnixStream` does the job of
//! an async HTTP client stack (and its runtime) in a few lines. The bodies are the homeserver's
//! own [`homeserver::admin::wire`] types.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::exit::{Failure, from_errcode};

/// How long one admin request may take; backups and integrity checks of large databases are
/// the slow ones.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The admin socket of a running homeserver.
pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    /// A client for the socket at `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// `GET path`, decoding the answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body, decoding the answer.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Failure> {
        let body = serde_json::to_vec(body)
            .map_err(|err| Failure::broke(format!("encoding the request: {err}")))?;
        self.request("POST", path, Some(&body))
    }

    /// `POST path` with a JSON body, for routes whose error answers the caller judges itself
    /// (a failed ping is news about the appservice, not a homeserver failure): a 2xx answer
    /// decoded, else the [`ErrorAnswer`].
    pub fn post_judged<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Result<T, ErrorAnswer>, Failure> {
        let body = serde_json::to_vec(body)
            .map_err(|err| Failure::broke(format!("encoding the request: {err}")))?;
        let (status, reply) = self.exchange("POST", path, Some(&body))?;
        if (200..300).contains(&status) {
            return decode("POST", path, &reply).map(Ok);
        }
        Ok(Err(ErrorAnswer::new(status, &reply)))
    }

    fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, Failure> {
        let (status, body) = self.exchange(method, path, body)?;
        if (200..300).contains(&status) {
            return decode(method, path, &body);
        }
        let error = ErrorAnswer::new(status, &body);
        Err(if status >= 500 {
            Failure::broke(format!(
                "the homeserver failed ({status}): {}; its log has the details \
                 (journalctl -u homeserver)",
                error.message
            ))
        } else {
            from_errcode(&error.errcode, error.message)
        })
    }

    /// Sends one request and reads the whole answer: its status and body.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), Failure> {
        let transport = |err: std::io::Error| {
            Failure::broke(format!(
                "talking to the homeserver's admin socket {}: {err}",
                self.socket.display()
            ))
        };
        let mut stream = UnixStream::connect(&self.socket).map_err(transport)?;
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(transport)?;
        let body = body.unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        // The server may answer (an error, say) and close before reading a body it does not
        // need; its answer is still there to read.
        if let Err(err) = stream.write_all(&request)
            && err.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(transport(err));
        }
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).map_err(transport)?;
        parse_response(&reply).ok_or_else(|| {
            Failure::broke(format!(
                "the homeserver's admin socket sent an answer this tool does not understand \
                 ({} bytes)",
                reply.len()
            ))
        })
    }
}

/// An error answer of the admin socket: the HTTP status and the Matrix error in its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// The HTTP status.
    pub status: u16,
    /// `errcode` (`M_UNKNOWN` when the body has none).
    pub errcode: String,
    /// `error` (`no details` when the body has none).
    pub message: String,
}

impl ErrorAnswer {
    fn new(status: u16, body: &[u8]) -> Self {
        let error: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        Self {
            status,
            errcode: error["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned(),
            message: error["error"].as_str().unwrap_or("no details").to_owned(),
        }
    }
}

/// Decodes a 2xx answer's body.
fn decode<T: DeserializeOwned>(method: &str, path: &str, body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|err| {
        Failure::broke(format!(
            "unexpected answer from the homeserver to {method} {path}: {err} \
             (is the homeserver the same version as this tool?)"
        ))
    })
}

/// Splits a complete HTTP/1.1 response into its status and body (`Content-Length` or chunked).
fn parse_response(reply: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = reply.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&reply[..split]).ok()?;
    let rest = &reply[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    if chunked {
        return Some((status, dechunk(rest)?));
    }
    match length {
        Some(length) => Some((status, rest.get(..length)?.to_vec())),
        None => Some((status, rest.to_vec())),
    }
}

/// Decodes a chunked body.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|window| window == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain), Some((200, b"{}".to_vec())));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((404, b"{}".to_vec())));
    }
}
