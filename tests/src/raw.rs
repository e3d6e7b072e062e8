//! Hand-written HTTP/1.1 for requests the agent cannot make: bodies the server stops reading
//! (oversized uploads), malformed requests; watching a connection for the server closing it;
//! and plain requests on the admin socket.

use crate::Reply;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Sends one raw HTTP/1.1 request over a fresh TCP connection and reads the reply.
///
/// Unlike the agent this keeps reading while the body is still being written, so it observes an
/// early answer (e.g. `413`) from a server that stops reading a too-large body. `head` is the
/// request line plus headers without the final blank line; `Content-Length` and
/// `Connection: close` are added.
pub fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> std::io::Result<Reply> {
    raw_http_on(TcpStream::connect(addr)?, head, body)
}

/// Opens a TCP connection to `addr` from the loopback address `local` (127.0.0.N), so one test
/// can act as clients at many source addresses.
pub fn connect_from(
    local: IpAddr,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(local, 0).into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// [`raw_http`] from the loopback address `local` (see [`connect_from`]).
pub fn raw_http_from(
    local: IpAddr,
    addr: SocketAddr,
    head: &str,
    body: &[u8],
) -> std::io::Result<Reply> {
    raw_http_on(
        connect_from(local, addr, Duration::from_secs(10))?,
        head,
        body,
    )
}

/// [`raw_http`] on a connection already open.
fn raw_http_on(mut stream: TcpStream, head: &str, body: &[u8]) -> std::io::Result<Reply> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let request_head = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let body = body.to_vec();
    let write_thread = thread::spawn(move || {
        // Write errors are expected when the server answers early and closes.
        if writer.write_all(request_head.as_bytes()).is_ok() {
            for chunk in body.chunks(64 * 1024) {
                if writer.write_all(chunk).is_err() {
                    break;
                }
            }
        }
    });
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                if response_complete(&received) {
                    break;
                }
            }
            // A reset after the reply arrived is the server dropping the unread body.
            Err(_) if response_complete(&received) => break,
            Err(err) => return Err(err),
        }
    }
    // Unblock the writer if it is still pushing a body nobody reads.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = write_thread.join();
    parse_response(&received).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "unparseable HTTP response: {:?}",
                String::from_utf8_lossy(&received)
            ),
        )
    })
}

/// Whether `data` holds a complete HTTP response with a `Content-Length` body.
pub(crate) fn response_complete(data: &[u8]) -> bool {
    let Some(head_end) = find(data, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    head.lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|len| len.trim().parse::<usize>().ok())
        .is_some_and(|len| data.len() >= head_end + 4 + len)
}

/// Parses a complete HTTP/1.1 response (Content-Length, chunked or read-to-EOF body).
pub(crate) fn parse_response(data: &[u8]) -> Option<Reply> {
    let head_end = find(data, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&data[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let raw_body = &data[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        decode_chunked(raw_body)?
    } else {
        raw_body.to_vec()
    };
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked transfer-encoded body.
fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Whether the peer has closed `stream` (end of file, or an error other than a read
/// timeout) within `wait`. Each read is bounded by the stream's read timeout: set one no
/// longer than `wait`, or a read on a silent connection blocks past it.
pub fn closed_within(stream: &mut impl Read, wait: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < wait {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return true,
        }
    }
    false
}

/// `GET path` on the admin socket in `data_dir`: the reply's head and body.
pub fn admin_get(data_dir: &Path, path: &str) -> (String, String) {
    admin_request(data_dir, "GET", path, "")
}

/// `POST path` with a JSON `body` on the admin socket in `data_dir`: the reply's head and body.
pub fn admin_post(data_dir: &Path, path: &str, body: &str) -> (String, String) {
    admin_request(data_dir, "POST", path, body)
}

fn admin_request(data_dir: &Path, method: &str, path: &str, body: &str) -> (String, String) {
    let mut stream = UnixStream::connect(data_dir.join("admin.sock")).expect("admin socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .expect("writing to the admin socket");
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .expect("reading the admin socket");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    (head.to_owned(), body.to_owned())
}
