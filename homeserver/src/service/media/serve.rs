//! How stored media goes out on the wire, shared by the client routes and the federation
//! routes: a response body that streams a file from the content store (optionally framed by
//! bytes before and after it, for a `multipart/mixed` answer to a peer), and the spec's
//! `Content-Disposition` rule (`inline` only for the content types it lists as safe).

use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Bytes;
use axum::http::HeaderValue;
use hyper::body::{Frame, SizeHint};

/// Content types the spec lists as safe to serve `inline`; everything else is an attachment.
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// Bytes read from disk per chunk of a download.
const CHUNK_BYTES: u64 = 256 * 1024;

/// Whether the spec lists this content type as safe to render inline.
pub fn inline_safe(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    INLINE_TYPES.contains(&essence.as_str())
}

/// `Content-Disposition` for served media: `inline` for safe types, `attachment` otherwise,
/// with the file name (RFC 6266: quoted when plain ASCII, RFC 8187 `filename*` otherwise).
pub fn content_disposition(inline: bool, filename: Option<&str>) -> HeaderValue {
    let kind = if inline { "inline" } else { "attachment" };
    let value = match filename {
        None => kind.to_owned(),
        Some(name)
            if name
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b'\\' | b'%')) =>
        {
            format!("{kind}; filename=\"{name}\"")
        }
        Some(name) => {
            let mut encoded = String::with_capacity(name.len() * 3);
            for byte in name.bytes() {
                // RFC 8187 attr-char: everything else is percent-encoded.
                if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                    encoded.push(char::from(byte));
                } else {
                    encoded.push_str(&format!("%{byte:02X}"));
                }
            }
            format!("{kind}; filename*=utf-8''{encoded}")
        }
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

/// A response body reading a file in chunks, each read on the blocking pool. No thread is
/// held while the receiver is slow to take a chunk, so slow downloads cannot starve the pool.
pub struct FileBody {
    head: Option<Bytes>,
    state: ReadState,
    remaining: u64,
    tail: Option<Bytes>,
}

enum ReadState {
    Idle(Option<File>),
    Reading(tokio::task::JoinHandle<(File, std::io::Result<Bytes>)>),
    Done,
}

impl FileBody {
    /// The first `size` bytes of `file`.
    pub fn new(file: File, size: u64) -> Self {
        Self::framed(Bytes::new(), file, size, Bytes::new())
    }

    /// `head`, then the first `size` bytes of `file`, then `tail`: one part of a multipart
    /// answer without loading the file.
    pub fn framed(head: Bytes, file: File, size: u64, tail: Bytes) -> Self {
        Self {
            head: Some(head).filter(|head| !head.is_empty()),
            state: ReadState::Idle(Some(file)),
            remaining: size,
            tail: Some(tail).filter(|tail| !tail.is_empty()),
        }
    }

    fn framing_left(&self) -> u64 {
        let len = |part: &Option<Bytes>| part.as_ref().map_or(0, |bytes| bytes.len() as u64);
        len(&self.head) + len(&self.tail)
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        loop {
            match &mut this.state {
                ReadState::Done => {
                    return Poll::Ready(this.tail.take().map(|t| Ok(Frame::data(t))));
                }
                ReadState::Idle(file) => {
                    let Some(mut file) = file.take().filter(|_| this.remaining > 0) else {
                        this.state = ReadState::Done;
                        continue;
                    };
                    let want =
                        usize::try_from(this.remaining.min(CHUNK_BYTES)).unwrap_or(usize::MAX);
                    this.state = ReadState::Reading(tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0; want];
                        let read = file.read_exact(&mut buf).map(|()| Bytes::from(buf));
                        (file, read)
                    }));
                }
                ReadState::Reading(task) => {
                    let joined = ready!(Pin::new(task).poll(cx));
                    let (file, read) = match joined {
                        Ok(done) => done,
                        Err(err) => {
                            this.state = ReadState::Done;
                            this.tail = None;
                            return Poll::Ready(Some(Err(std::io::Error::other(err))));
                        }
                    };
                    return match read {
                        Ok(chunk) => {
                            this.remaining -= chunk.len() as u64;
                            this.state = ReadState::Idle(Some(file));
                            Poll::Ready(Some(Ok(Frame::data(chunk))))
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "reading media for a download");
                            this.state = ReadState::Done;
                            this.tail = None;
                            Poll::Ready(Some(Err(err)))
                        }
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none()
            && self.tail.is_none()
            && self.remaining == 0
            && !matches!(self.state, ReadState::Reading(_))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining + self.framing_left())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_is_inline_only_for_safe_types_and_encodes_names() {
        let check = |content_type: &str, name: Option<&str>, want: &str| {
            let value = content_disposition(inline_safe(content_type), name);
            assert_eq!(
                value.to_str().expect("ASCII header"),
                want,
                "{content_type} {name:?}"
            );
        };
        check("image/png", None, "inline");
        check(
            "IMAGE/PNG; charset=x",
            Some("a b.png"),
            "inline; filename=\"a b.png\"",
        );
        check(
            "text/html",
            Some("page.html"),
            "attachment; filename=\"page.html\"",
        );
        check("application/octet-stream", None, "attachment");
        check(
            "text/plain",
            Some("naïve \"q\".txt"),
            "inline; filename*=utf-8''na%C3%AFve%20%22q%22.txt",
        );
        check(
            "image/svg+xml",
            Some("x.svg"),
            "attachment; filename=\"x.svg\"",
        );
    }
}
