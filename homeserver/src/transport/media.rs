//! Fetching media of other units over federation (spec: Server-Server API, "Content
//! Repository"), requesting side: [`fetch`] asks the allow-listed peer named in an `mxc://`
//! URI for an item with the signed federation client, and [`parse_multipart`] takes its answer
//! apart (no I/O, no panics on any input). `service::media` stores what comes back and serves
//! it from then on. Thumbnails of remote media are made there from the cached original, not
//! asked of the peer: one fetch serves every size, a thumbnail keeps working while the link is
//! down, and the bounds of this unit's own thumbnailer (decode size, concurrency) apply to
//! foreign images.
//!
//! Deviations for closed federation: a `Location` redirect in a peer's answer is refused,
//! never followed (it would point outside the allow-list); the fallback to the deprecated
//! `/_matrix/media/v3/download` on `404 M_UNRECOGNIZED` is made, as the spec asks, but to the
//! same allow-listed endpoints and signed like every other request.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use crate::error::{Error, ErrorCode, Result};
use crate::transport::client::{FedError, FederationClient};
use crate::util::urlencode;

/// Room for the multipart framing (boundaries, part headers, the metadata object) on top of
/// the largest item accepted.
const MULTIPART_OVERHEAD: usize = 64 * 1024;

/// Parts a peer's answer may have before it is refused; the spec says exactly two.
const MAX_PARTS: usize = 2;

/// An item as a peer served it, not yet checked against this unit's rules for stored media.
#[derive(Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The bytes.
    pub bytes: Bytes,
    /// The `Content-Type` the peer gave them, if any.
    pub content_type: Option<String>,
    /// The file name from the peer's `Content-Disposition`, if any.
    pub filename: Option<String>,
}

/// # Fetch
/// Downloads `mxc://{origin}/{media_id}` from the allow-listed peer `origin`: the federation
/// media endpoint first, the deprecated client one if the peer does not know it. At most
/// `max_bytes` of content are accepted (more is 502 `M_TOO_LARGE`); the peer must start
/// answering within `deadline` (else 504); an unreachable peer is 502. The caller has checked
/// that `origin` is allow-listed and that `media_id` has the spec's alphabet (it goes into
/// a path as it is).
#[tracing::instrument(skip(client))]
pub async fn fetch(
    client: &FederationClient,
    origin: &str,
    media_id: &str,
    max_bytes: u64,
    deadline: Duration,
) -> Result<Fetched> {
    let max_content = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let limit = max_content.saturating_add(MULTIPART_OVERHEAD);
    let timeout_ms = deadline.as_millis();
    let path = format!("/_matrix/federation/v1/media/download/{media_id}?timeout_ms={timeout_ms}");
    let fetched = match client.get_raw(origin, &path, limit, deadline).await {
        Ok(raw) => {
            let content_type = header_str(&raw.headers, header::CONTENT_TYPE);
            // Scanning tens of MiB for boundaries is CPU work: off the runtime.
            tokio::task::spawn_blocking(move || parse_multipart(content_type.as_deref(), &raw.body))
                .await
                .map_err(|err| Error::internal(format!("multipart parsing failed: {err}")))?
                .map_err(|why| {
                    Error::new(
                        ErrorCode::BadGateway,
                        format!("{origin} answered with malformed media: {why}"),
                    )
                })?
        }
        Err(FedError::Status { status, body, .. })
            if status == StatusCode::NOT_FOUND && errcode(&body) == Some("M_UNRECOGNIZED") =>
        {
            // The spec's fallback for peers without the federation media endpoints, with
            // `allow_remote=false` so the peer does not in turn ask someone else.
            let path = format!(
                "/_matrix/media/v3/download/{}/{media_id}?allow_remote=false&timeout_ms={timeout_ms}",
                urlencode(origin)
            );
            let raw = client
                .get_raw(origin, &path, max_content, deadline)
                .await
                .map_err(peer_error)?;
            Fetched {
                content_type: header_str(&raw.headers, header::CONTENT_TYPE),
                filename: header_str(&raw.headers, header::CONTENT_DISPOSITION)
                    .and_then(|value| disposition_filename(&value)),
                bytes: raw.body,
            }
        }
        Err(err) => return Err(peer_error(err)),
    };
    if fetched.bytes.len() > max_content {
        return Err(Error::new(
            ErrorCode::RemoteTooLarge,
            format!("Media of {origin} is larger than this unit accepts ({max_bytes} bytes)"),
        ));
    }
    Ok(fetched)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// The `errcode` of a Matrix error body, if it is one.
fn errcode(body: &str) -> Option<&str> {
    let start = body.find("\"errcode\"")?;
    let rest = &body[start + "\"errcode\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    rest.split('"').next()
}

/// A peer's failure as the client should see it: the peer's own `M_NOT_FOUND`,
/// `M_NOT_YET_UPLOADED` and `M_TOO_LARGE` pass through; an unreachable or confused peer is
/// 502, one that does not answer in time 504.
fn peer_error(err: FedError) -> Error {
    match err {
        FedError::NotAllowed(server) => {
            Error::not_found(format!("{server} is not a peer of this unit"))
        }
        FedError::TimedOut { server, after } => Error::new(
            ErrorCode::GatewayTimeout,
            format!("{server} did not answer within {} ms", after.as_millis()),
        ),
        FedError::TooLarge { server, limit } => Error::new(
            ErrorCode::RemoteTooLarge,
            format!("Media of {server} is larger than this unit accepts ({limit} bytes)"),
        ),
        FedError::Unreachable { server, reason } => Error::new(
            ErrorCode::BadGateway,
            format!("Cannot reach {server} for this media: {reason}"),
        ),
        FedError::BadResponse { server, reason } => Error::new(
            ErrorCode::BadGateway,
            format!("{server} answered badly: {reason}"),
        ),
        FedError::Status {
            server,
            status,
            body,
        } => {
            let detail = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "no details".to_owned());
            match (status, errcode(&body)) {
                (StatusCode::NOT_FOUND, _) => Error::not_found(format!("{server}: {detail}")),
                (_, Some("M_NOT_YET_UPLOADED")) => {
                    Error::new(ErrorCode::NotYetUploaded, format!("{server}: {detail}"))
                }
                (_, Some("M_TOO_LARGE")) => {
                    Error::new(ErrorCode::RemoteTooLarge, format!("{server}: {detail}"))
                }
                _ => Error::new(
                    ErrorCode::BadGateway,
                    format!("{server} answered {status}: {detail}"),
                ),
            }
        }
    }
}

/// Takes apart a federation media answer: `Content-Type: multipart/mixed; boundary=…` with
/// exactly two parts, a JSON object (the metadata) and the content with its own
/// `Content-Type` and `Content-Disposition`. Lenient where the wire varies harmlessly (LF
/// line ends, transport padding after a boundary, a preamble and epilogue, quoted
/// boundaries), strict about the structure; every failure is a reason, never a panic.
pub fn parse_multipart(content_type: Option<&str>, body: &[u8]) -> Result<Fetched, String> {
    let content_type = content_type.ok_or("no Content-Type")?;
    let boundary = multipart_boundary(content_type)?;
    let parts = split_parts(body, boundary.as_bytes())?;
    let [metadata, content] = parts.as_slice() else {
        return Err(format!("{} parts instead of two", parts.len()));
    };
    let (_, metadata) = split_part(metadata)?;
    match serde_json::from_slice::<Value>(metadata) {
        Ok(Value::Object(_)) => {}
        _ => return Err("the first part is not a JSON object".to_owned()),
    }
    let (headers, bytes) = split_part(content)?;
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.clone())
    };
    if header("location").is_some() {
        // Closed federation: a redirect would lead outside the allow-list.
        return Err("a Location redirect, which this unit does not follow".to_owned());
    }
    Ok(Fetched {
        bytes: Bytes::copy_from_slice(bytes),
        content_type: header("content-type"),
        filename: header("content-disposition").and_then(|value| disposition_filename(&value)),
    })
}

/// The `boundary` parameter of a `multipart/mixed` content type.
fn multipart_boundary(content_type: &str) -> Result<String, String> {
    let mut params = content_type.split(';');
    let essence = params.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("multipart/mixed") {
        return Err(format!(
            "Content-Type {essence:?} instead of multipart/mixed"
        ));
    }
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        // RFC 2046: 1 to 70 characters, none of them line breaks.
        if value.is_empty() || value.len() > 70 || value.contains(['\r', '\n']) {
            return Err("an invalid multipart boundary".to_owned());
        }
        return Ok(value.to_owned());
    }
    Err("no multipart boundary".to_owned())
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + from)
}

/// The next delimiter line (`--boundary` at the start of a line) at or after `from`.
fn next_delimiter(body: &[u8], delimiter: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let found = find(body, delimiter, at)?;
        let at_line_start = found == 0 || body[found - 1] == b'\n';
        // A line that merely starts with the boundary (`--b` in `--bx`) is content.
        let ends_there = matches!(
            body.get(found + delimiter.len()),
            None | Some(b'-' | b' ' | b'\t' | b'\r' | b'\n')
        );
        if at_line_start && ends_there {
            return Some(found);
        }
        at = found + 1;
    }
}

/// The bodies of the parts between the delimiters of `boundary` (RFC 2046 §5.1.1).
fn split_parts<'a>(body: &'a [u8], boundary: &[u8]) -> Result<Vec<&'a [u8]>, String> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut at = next_delimiter(body, &delimiter, 0).ok_or("no multipart boundary in the body")?;
    let mut parts = Vec::new();
    loop {
        let mut pos = at + delimiter.len();
        if body.get(pos..pos + 2) == Some(b"--") {
            return Ok(parts);
        }
        while matches!(body.get(pos), Some(b' ' | b'\t')) {
            pos += 1;
        }
        pos += match body.get(pos..) {
            Some([b'\r', b'\n', ..]) => 2,
            Some([b'\n', ..]) => 1,
            _ => return Err("a boundary line with trailing text".to_owned()),
        };
        let next =
            next_delimiter(body, &delimiter, pos).ok_or("the multipart body is not closed")?;
        // The line break before a delimiter belongs to the delimiter.
        let mut end = next;
        if end > pos && body[end - 1] == b'\n' {
            end -= 1;
            if end > pos && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        if parts.len() == MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} parts"));
        }
        parts.push(&body[pos..end]);
        at = next;
    }
}

/// A part's headers (`name`, `value`) and its body.
type Part<'a> = (Vec<(String, String)>, &'a [u8]);

/// Splits one part at the blank line after its headers.
fn split_part(part: &[u8]) -> Result<Part<'_>, String> {
    let (head, body) = if let Some(body) = part.strip_prefix(b"\r\n") {
        (&part[..0], body)
    } else if let Some(body) = part.strip_prefix(b"\n") {
        (&part[..0], body)
    } else {
        let crlf = find(part, b"\r\n\r\n", 0).map(|at| (at, 4));
        let lf = find(part, b"\n\n", 0).map(|at| (at, 2));
        let (at, len) = match (crlf, lf) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return Err("a part without a blank line after its headers".into()),
        };
        (&part[..at], &part[at + len..])
    };
    let head = std::str::from_utf8(head).map_err(|_| "part headers that are not UTF-8")?;
    let headers = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Ok((headers, body))
}

/// The file name a `Content-Disposition` value gives: `filename*` (RFC 8187, UTF-8 only)
/// before `filename` (quoted or a token). `None` when it names none or cannot be decoded.
pub fn disposition_filename(value: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    // Skip the disposition type.
    let mut rest = value.split_once(';')?.1;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            break;
        }
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            // An unclosed quote takes the rest of the value.
            (out, end.map_or("", |end| &quoted[end..]))
        } else {
            match after.split_once(';') {
                Some((token, remaining)) => (token.trim().to_owned(), remaining),
                None => (after.trim().to_owned(), ""),
            }
        };
        match name.as_str() {
            "filename" => plain = Some(value),
            "filename*" => extended = decode_ext_value(&value),
            _ => {}
        }
        rest = remaining;
    }
    extended.or(plain).filter(|name| !name.is_empty())
}

/// Decodes an RFC 8187 `ext-value` (`utf-8'lang'percent-encoded`).
fn decode_ext_value(value: &str) -> Option<String> {
    let mut pieces = value.splitn(3, '\'');
    let charset = pieces.next()?;
    let _language = pieces.next()?;
    let encoded = pieces.next()?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut input = encoded.bytes();
    while let Some(byte) = input.next() {
        if byte == b'%' {
            let high = char::from(input.next()?).to_digit(16)?;
            let low = char::from(input.next()?).to_digit(16)?;
            bytes.push(u8::try_from(high * 16 + low).ok()?);
        } else {
            bytes.push(byte);
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n--not-a-boundary\r\n";

    fn answer(boundary: &str, content_headers: &str, bytes: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n\
             {content_headers}\r\n\r\n"
        )
        .into_bytes();
        out.extend_from_slice(bytes);
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }

    #[test]
    fn a_well_formed_answer_yields_the_bytes_type_and_name() {
        let body = answer(
            "b0und",
            "Content-Type: image/png\r\nContent-Disposition: inline; filename=\"cat.png\"",
            PNG,
        );
        let fetched =
            parse_multipart(Some("multipart/mixed; boundary=b0und"), &body).expect("well-formed");
        assert_eq!(fetched.bytes.as_ref(), PNG);
        assert_eq!(fetched.content_type.as_deref(), Some("image/png"));
        assert_eq!(fetched.filename.as_deref(), Some("cat.png"));
        // A quoted boundary, LF line ends and a preamble are accepted too.
        let lf = String::from_utf8(answer("q b", "Content-Type: text/plain", b"hi"))
            .expect("ASCII")
            .replace("\r\n", "\n");
        let with_preamble = format!("preamble\n{lf}");
        let fetched = parse_multipart(
            Some("Multipart/Mixed; boundary=\"q b\""),
            with_preamble.as_bytes(),
        )
        .expect("LF variant");
        assert_eq!(fetched.bytes.as_ref(), b"hi");
        assert_eq!(fetched.filename, None);
    }

    #[test]
    fn malformed_answers_are_reasons_not_panics() {
        let good = answer("b", "Content-Type: image/png", PNG);
        let cases: Vec<(Option<&str>, Vec<u8>)> = vec![
            (None, good.clone()),
            (Some("image/png"), good.clone()),
            (Some("multipart/mixed"), good.clone()),
            (Some("multipart/mixed; boundary="), good.clone()),
            (Some("multipart/mixed; boundary=other"), good.clone()),
            (
                Some("multipart/mixed; boundary=b"),
                good[..good.len() - 8].to_vec(),
            ),
            (Some("multipart/mixed; boundary=b"), b"--b--".to_vec()),
            (Some("multipart/mixed; boundary=b"), b"--b".to_vec()),
            (Some("multipart/mixed; boundary=b"), b"--bx\r\n".to_vec()),
            (
                Some("multipart/mixed; boundary=b"),
                b"--b\r\n\r\n{}\r\n--b--".to_vec(),
            ),
            (
                Some("multipart/mixed; boundary=b"),
                answer("b", "Location: https://elsewhere.example/x", b""),
            ),
            (
                Some("multipart/mixed; boundary=b"),
                b"--b\r\n\r\n[]\r\n--b\r\n\r\nx\r\n--b--".to_vec(),
            ),
            (
                Some("multipart/mixed; boundary=b"),
                b"--b\r\n\r\n{}\r\n--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--".to_vec(),
            ),
            (Some("multipart/mixed; boundary=b"), Vec::new()),
        ];
        for (content_type, body) in cases {
            assert!(
                parse_multipart(content_type, &body).is_err(),
                "{content_type:?} {:?}",
                String::from_utf8_lossy(&body)
            );
        }
        // Every prefix of a good answer fails cleanly or parses; none panics.
        for len in 0..good.len() {
            let _ = parse_multipart(Some("multipart/mixed; boundary=b"), &good[..len]);
        }
    }

    #[test]
    fn file_names_come_from_either_disposition_form() {
        let check = |value: &str, want: Option<&str>| {
            assert_eq!(disposition_filename(value).as_deref(), want, "{value}");
        };
        check("inline", None);
        check("inline; filename=\"a b.png\"", Some("a b.png"));
        check("attachment; filename=plain.txt", Some("plain.txt"));
        check(
            "inline; filename=\"q\\\"uote;d.txt\"",
            Some("q\"uote;d.txt"),
        );
        check(
            "inline; filename*=utf-8''na%C3%AFve%20%22q%22.txt",
            Some("naïve \"q\".txt"),
        );
        check(
            "attachment; filename=\"fallback.txt\"; filename*=UTF-8''r%C3%A9el.txt",
            Some("réel.txt"),
        );
        check("inline; filename*=iso-8859-1''x.txt", None);
        check("inline; filename*=utf-8''bad%zz", None);
        check("inline; filename=\"unclosed", Some("unclosed"));
    }

    #[test]
    fn peer_errors_map_to_the_spec_codes() {
        let status = |status: StatusCode, body: &str| {
            let err = peer_error(FedError::Status {
                server: "b.test".to_owned(),
                status,
                body: body.to_owned(),
            });
            match err {
                Error::Matrix { code, .. } => code,
                other => panic!("not a Matrix error: {other:?}"),
            }
        };
        let nyu = r#"{"errcode":"M_NOT_YET_UPLOADED","error":"wait"}"#;
        assert_eq!(
            status(StatusCode::NOT_FOUND, r#"{"errcode":"M_NOT_FOUND"}"#),
            ErrorCode::NotFound
        );
        assert_eq!(
            status(StatusCode::GATEWAY_TIMEOUT, nyu),
            ErrorCode::NotYetUploaded
        );
        assert_eq!(
            status(StatusCode::BAD_GATEWAY, r#"{"errcode": "M_TOO_LARGE"}"#),
            ErrorCode::RemoteTooLarge
        );
        assert_eq!(
            status(StatusCode::FORBIDDEN, "<html>"),
            ErrorCode::BadGateway
        );
        assert_eq!(
            errcode(r#"{"errcode" : "M_UNRECOGNIZED"}"#),
            Some("M_UNRECOGNIZED")
        );
    }
}
