//! Media of other units over closed federation, between two real units (A on 127.0.0.2, B on
//! 127.0.0.3): B's federation media endpoints answered directly (signed as A) with well-formed
//! `multipart/mixed`, unknown and pending media, unsigned requests; A's users downloading B's
//! media byte for byte with the right headers, thumbnails of it made by A, one fetch for
//! concurrent first reads, no quota charged for it; unknown media, bad IDs, `allow_remote=false`
//! and server names that are not allow-listed (no connection made); and, with B stopped, reads
//! served from A's cache while uncached media fails fast with 502, or 504 when the peer hangs.
//!
//! Test images are PNGs written here by hand (stored zlib blocks) and checked by walking their
//! chunks, as in `media.rs`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tests::federation::{ConnCounter, Federation, Unit, UnitOptions, x_matrix};
use tests::png;
use tests::{Client, Reply, Value, assert_error, enc, json};

const UPLOAD: &str = "/_matrix/media/v3/upload";
const V1: &str = "/_matrix/client/v1/media";
const LEGACY: &str = "/_matrix/media/v3";
const FED: &str = "/_matrix/federation/v1/media";

/// Every user's quota: what bob reads from B plus what he uploads himself would exceed it.
const QUOTA: usize = 400_000;

// ---------------------------------------------------------------------------------------------
// PNG by hand

/// A valid `width`×`height` 8-bit RGB PNG with a gradient.
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            raw.extend_from_slice(&[(x * 4 % 256) as u8, (y * 4 % 256) as u8, 0x80]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (n, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(n + 1 == blocks.len()));
        let len = u16::try_from(block.len()).expect("stored blocks hold at most 65535 bytes");
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&png::adler32(&raw).to_be_bytes());
    let mut header = width.to_be_bytes().to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = png::SIGNATURE.to_vec();
    png::chunk(&mut out, b"IHDR", &header);
    png::chunk(&mut out, b"IDAT", &zlib);
    png::chunk(&mut out, b"IEND", &[]);
    out
}

/// Checks a PNG's structure (signature, every chunk's CRC) and returns its dimensions.
fn png_dimensions(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.starts_with(png::SIGNATURE), "not a PNG");
    let mut at = png::SIGNATURE.len();
    let mut dimensions = None;
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let body = &bytes[at + 4..at + 8 + len];
        let crc = u32::from_be_bytes(bytes[at + 8 + len..at + 12 + len].try_into().expect("4"));
        assert_eq!(png::crc32(body), crc, "bad CRC");
        if &body[..4] == b"IHDR" {
            let field = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().expect("4"));
            dimensions = Some((field(4), field(8)));
        }
        at += 12 + len;
    }
    assert_eq!(at, bytes.len(), "trailing bytes after the last chunk");
    dimensions.expect("an IHDR chunk")
}

/// Bytes that are no image, long enough to cross the server's read chunks.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Requests

/// Uploads, asserting success; returns the media ID (the URI must name `unit`).
fn upload_ok(client: &Client, unit: &Unit, bytes: &[u8], kind: &str, name: &str) -> String {
    let reply = client.request(
        "POST",
        &format!("{UPLOAD}?filename={}", enc(name)),
        &[("Content-Type", kind)],
        Some(bytes),
    );
    let body = reply.json();
    assert_eq!(reply.status, 200, "upload: {body:#}");
    let uri = body["content_uri"].as_str().expect("a content_uri");
    let prefix = format!("mxc://{}/", unit.name());
    uri.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{uri} does not name {}", unit.name()))
        .to_owned()
}

fn get(client: &Client, path: &str) -> Reply {
    client.request("GET", path, &[], None)
}

fn download(client: &Client, server: &str, media_id: &str) -> Reply {
    get(
        client,
        &format!("{V1}/download/{}/{}", enc(server), enc(media_id)),
    )
}

fn thumbnail(client: &Client, server: &str, media_id: &str, width: u32, height: u32) -> Reply {
    get(
        client,
        &format!(
            "{V1}/thumbnail/{}/{}?width={width}&height={height}&method=scale",
            enc(server),
            enc(media_id)
        ),
    )
}

fn error_of(reply: &Reply) -> (u16, Value) {
    (reply.status, reply.json())
}

fn assert_ok(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        200,
        "{what}: {}",
        String::from_utf8_lossy(&reply.body[..reply.body.len().min(500)])
    );
}

/// A signed federation `GET` from unit `from` to unit `to`.
fn signed_get(from: &Unit, to: &Unit, uri: &str) -> Reply {
    let auth = x_matrix(
        &from.signing_key(),
        from.name(),
        to.name(),
        "GET",
        uri,
        None,
    );
    to.fed_client()
        .request("GET", uri, Some(&auth), None)
        .unwrap_or_else(|err| panic!("GET {uri} on {}: {err}", to.name()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// One part of a multipart answer: headers (names lower-cased) and body.
struct Part {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Part {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Parses a `multipart/mixed` reply strictly (CRLF framing, a closing delimiter, nothing
/// after it but a line break), so a malformed answer fails the test.
fn multipart(reply: &Reply) -> Vec<Part> {
    let content_type = reply.header("content-type").expect("a Content-Type");
    let boundary = content_type
        .strip_prefix("multipart/mixed; boundary=")
        .unwrap_or_else(|| panic!("not multipart/mixed with a boundary: {content_type}"));
    assert!(
        (1..=70).contains(&boundary.len()),
        "bad boundary {boundary:?}"
    );
    let delimiter = format!("--{boundary}");
    let body = &reply.body;
    assert!(
        body.starts_with(delimiter.as_bytes()),
        "the body does not open with the boundary"
    );
    let closing = format!("\r\n--{boundary}--\r\n");
    assert!(
        body.ends_with(closing.as_bytes()),
        "the body does not end with the closing delimiter"
    );
    let inner = &body[delimiter.len()..body.len() - closing.len()];
    let separator = format!("\r\n--{boundary}\r\n");
    let mut parts = Vec::new();
    let mut rest = inner
        .strip_prefix(b"\r\n")
        .expect("CRLF after the boundary");
    loop {
        let (raw, next) = match find(rest, separator.as_bytes()) {
            Some(at) => (&rest[..at], Some(&rest[at + separator.len()..])),
            None => (rest, None),
        };
        let split = find(raw, b"\r\n\r\n").expect("a blank line after the part headers");
        let headers = String::from_utf8(raw[..split].to_vec())
            .expect("ASCII headers")
            .split("\r\n")
            .map(|line| {
                let (name, value) = line.split_once(':').expect("name: value");
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        parts.push(Part {
            headers,
            body: raw[split + 4..].to_vec(),
        });
        match next {
            Some(next) => rest = next,
            None => return parts,
        }
    }
}

/// A listener that accepts connections and never answers (a peer that hangs).
struct Silent {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Silent {
    fn bind(ip: Ipv4Addr) -> Silent {
        let listener = TcpListener::bind((ip, 0)).expect("binding a silent listener");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("an address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Silent {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn media_of_other_units_is_fetched_over_federation_cached_and_bounded() {
    let options = UnitOptions {
        extra_toml: format!(
            "[media]\nuser_quota_bytes = {QUOTA}\nlegacy_unauthenticated_downloads = true\n"
        ),
        ..UnitOptions::default()
    };
    let mut fed = Federation::start_with(&["unit-a.test", "unit-b.test"], &options);
    let (a, b) = (0, 1);
    let bob = fed[a].register("bob");
    let alice = fed[b].register("alice");
    let b_name = fed[b].name().to_owned();

    let image = png(64, 48);
    let cat = upload_ok(&alice, &fed[b], &image, "image/png", "cat.png");
    let blob = payload(300_000);
    let data = upload_ok(
        &alice,
        &fed[b],
        &blob,
        "application/octet-stream",
        "data.bin",
    );
    let legacy_only = upload_ok(&alice, &fed[b], b"plain words", "text/plain", "a.txt");
    let never_fetched = upload_ok(&alice, &fed[b], b"kept on B", "text/plain", "b.txt");

    // --- B's federation endpoints, asked directly (signed as A) ---
    let reply = signed_get(&fed[a], &fed[b], &format!("{FED}/download/{cat}"));
    assert_ok(&reply, "federation download");
    let parts = multipart(&reply);
    assert_eq!(parts.len(), 2, "exactly two parts");
    assert_eq!(parts[0].header("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_slice::<Value>(&parts[0].body).expect("JSON metadata"),
        json!({})
    );
    assert_eq!(parts[1].header("content-type"), Some("image/png"));
    assert_eq!(
        parts[1].header("content-disposition"),
        Some("inline; filename=\"cat.png\"")
    );
    assert!(parts[1].header("location").is_none(), "no redirect");
    assert_eq!(parts[1].body, image, "federation download bytes");
    let length: usize = reply
        .header("content-length")
        .and_then(|len| len.parse().ok())
        .expect("a Content-Length");
    assert_eq!(length, reply.body.len());

    let reply = signed_get(
        &fed[a],
        &fed[b],
        &format!("{FED}/thumbnail/{cat}?width=32&height=32&method=scale&animated=false"),
    );
    assert_ok(&reply, "federation thumbnail");
    let parts = multipart(&reply);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].header("content-type"), Some("image/png"));
    assert_eq!(png_dimensions(&parts[1].body), (32, 24));

    let missing = signed_get(&fed[a], &fed[b], &format!("{FED}/download/NoSuchMediaHere"));
    assert_error(&error_of(&missing), 404, "M_NOT_FOUND");
    let pending = alice.post_ok("/_matrix/media/v1/create", &json!({}));
    let pending_id = pending["content_uri"]
        .as_str()
        .and_then(|uri| uri.rsplit('/').next())
        .expect("a created media ID")
        .to_owned();
    let reply = signed_get(&fed[a], &fed[b], &format!("{FED}/download/{pending_id}"));
    assert_error(&error_of(&reply), 504, "M_NOT_YET_UPLOADED");
    let unsigned = fed[b]
        .fed_client()
        .request("GET", &format!("{FED}/download/{cat}"), None, None)
        .expect("an answer");
    assert_error(&error_of(&unsigned), 401, "M_UNAUTHORIZED");

    // --- bob on A reads alice's media through A ---
    let reply = download(&bob, &b_name, &cat);
    assert_ok(&reply, "remote download");
    assert_eq!(reply.body, image, "remote download bytes");
    assert_eq!(reply.header("content-type"), Some("image/png"));
    assert_eq!(
        reply.header("content-disposition"),
        Some("inline; filename=\"cat.png\"")
    );
    let renamed = get(
        &bob,
        &format!("{V1}/download/{}/{cat}/other.png", enc(&b_name)),
    );
    assert_ok(&renamed, "remote download with a file name");
    assert_eq!(
        renamed.header("content-disposition"),
        Some("inline; filename=\"other.png\"")
    );
    let thumb = thumbnail(&bob, &b_name, &cat, 16, 16);
    assert_ok(&thumb, "remote thumbnail");
    assert_eq!(png_dimensions(&thumb.body), (16, 12));

    // Concurrent first reads of one item: all get it, A fetches it once.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (bob, server, id) = (bob.clone(), b_name.clone(), data.clone());
            thread::spawn(move || download(&bob, &server, &id))
        })
        .collect();
    for reader in readers {
        let reply = reader.join().expect("a reader thread");
        assert_ok(&reply, "concurrent remote download");
        assert_eq!(reply.body, blob);
        assert_eq!(
            reply.header("content-disposition"),
            Some("attachment; filename=\"data.bin\"")
        );
    }
    let fetches = fed[a]
        .current_log()
        .lines()
        .filter(|line| line.contains("cached remote media") && line.contains(&data))
        .count();
    assert_eq!(fetches, 1, "A fetched the item {fetches} times");

    // Cached remote media is charged to nobody: bob may still upload most of his quota.
    let mine = payload(200_000);
    assert!(image.len() + blob.len() + mine.len() > QUOTA);
    upload_ok(&bob, &fed[a], &mine, "application/octet-stream", "mine.bin");

    // Unknown media of B, malformed IDs, and media of servers that are not peers.
    assert_error(
        &error_of(&download(&bob, &b_name, "NoSuchMediaHere")),
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &error_of(&download(&bob, &b_name, "bad.id")),
        404,
        "M_NOT_FOUND",
    );
    let trap = ConnCounter::bind(Ipv4Addr::new(127, 0, 0, 11));
    for stranger in [trap.addr().to_string(), "unknown.test".to_owned()] {
        assert_error(
            &error_of(&download(&bob, &stranger, "SomeMediaId")),
            404,
            "M_NOT_FOUND",
        );
        assert_error(
            &error_of(&thumbnail(&bob, &stranger, "SomeMediaId", 8, 8)),
            404,
            "M_NOT_FOUND",
        );
    }
    thread::sleep(Duration::from_millis(50));
    assert_eq!(trap.count(), 0, "A dialled a server that is not a peer");

    // allow_remote=false keeps a read local (legacy routes, enabled in this config).
    let legacy = |query: &str| {
        get(
            &fed[a].anon(),
            &format!("{LEGACY}/download/{}/{legacy_only}{query}", enc(&b_name)),
        )
    };
    assert_error(
        &error_of(&legacy("?allow_remote=false")),
        404,
        "M_NOT_FOUND",
    );
    let reply = legacy("");
    assert_ok(&reply, "legacy remote download");
    assert_eq!(reply.body, b"plain words");

    // --- B goes down: what A cached is still served, the rest fails fast ---
    fed[b].stop();
    let reply = download(&bob, &b_name, &cat);
    assert_ok(&reply, "cached download with B down");
    assert_eq!(reply.body, image);
    let thumb = thumbnail(&bob, &b_name, &cat, 40, 40);
    assert_ok(&thumb, "new thumbnail size of a cached item with B down");
    assert_eq!(png_dimensions(&thumb.body), (40, 30));

    let started = Instant::now();
    let reply = download(&bob, &b_name, &never_fetched);
    assert_eq!(reply.status, 502, "B down: {:?}", reply.json());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // A peer that accepts connections and never answers: 504 once timeout_ms passes.
    let silent = Silent::bind(fed[b].ip());
    let b_unit: &Unit = &fed[b];
    fed[a].cut_link(b_unit, silent.addr);
    let started = Instant::now();
    let reply = get(
        &bob,
        &format!(
            "{V1}/download/{}/{never_fetched}?timeout_ms=1000",
            enc(&b_name)
        ),
    );
    assert_eq!(reply.status, 504, "hanging peer: {:?}", reply.json());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
