//! Media repository: upload and byte-exact download, file names and `Content-Disposition`,
//! security headers, thumbnails (scale, crop, no upscaling, cache), deduplication by content,
//! the upload size limit (declared and streamed), per-user quotas, async uploads, token
//! checks, unknown and remote media, undecodable and oversized images, the frozen legacy
//! routes, URL previews, and media surviving a restart.
//!
//! Test images are PNGs written here by hand (stored zlib blocks), so no image library is
//! needed; thumbnails are checked by walking their PNG chunks (every CRC) and reading the
//! dimensions from `IHDR`.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use tests::png;
use tests::{Client, Reply, TestEnv, Value, assert_error, enc, json, raw_http};

const UPLOAD: &str = "/_matrix/media/v3/upload";
const V1: &str = "/_matrix/client/v1/media";
const LEGACY: &str = "/_matrix/media/v3";

// ---------------------------------------------------------------------------------------------
// PNG by hand

/// A PNG header for `width`×`height` 8-bit RGB.
fn ihdr(width: u32, height: u32) -> Vec<u8> {
    let mut data = width.to_be_bytes().to_vec();
    data.extend_from_slice(&height.to_be_bytes());
    data.extend_from_slice(&[8, 2, 0, 0, 0]);
    data
}

/// A valid `width`×`height` RGB PNG with a gradient (so crops of it differ).
fn png(width: u32, height: u32) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            raw.extend_from_slice(&[(x % 256) as u8, (y % 256) as u8, 0x80]);
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
    let mut out = png::SIGNATURE.to_vec();
    png::chunk(&mut out, b"IHDR", &ihdr(width, height));
    png::chunk(&mut out, b"IDAT", &zlib);
    png::chunk(&mut out, b"IEND", &[]);
    out
}

/// A PNG whose header claims `width`×`height` but whose data is a few bytes of nothing.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut out = png::SIGNATURE.to_vec();
    png::chunk(&mut out, b"IHDR", &ihdr(width, height));
    png::chunk(&mut out, b"IDAT", &[0x78, 0x01, 0x00, 0x00]);
    png::chunk(&mut out, b"IEND", &[]);
    out
}

/// Checks a PNG's structure (signature, every chunk's CRC, `IHDR` first, `IEND` last) and
/// returns its dimensions.
fn png_dimensions(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.starts_with(png::SIGNATURE),
        "not a PNG: {:?}",
        &bytes[..bytes.len().min(16)]
    );
    let mut at = png::SIGNATURE.len();
    let mut kinds = Vec::new();
    let mut dimensions = None;
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let body = &bytes[at + 4..at + 8 + len];
        let crc = u32::from_be_bytes(bytes[at + 8 + len..at + 12 + len].try_into().expect("4"));
        assert_eq!(
            png::crc32(body),
            crc,
            "bad CRC in chunk {:?}",
            String::from_utf8_lossy(&body[..4])
        );
        if &body[..4] == b"IHDR" {
            let field = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().expect("4"));
            dimensions = Some((field(4), field(8)));
        }
        kinds.push(body[..4].to_vec());
        at += 12 + len;
    }
    assert_eq!(kinds.first().map(Vec::as_slice), Some(&b"IHDR"[..]));
    assert_eq!(kinds.last().map(Vec::as_slice), Some(&b"IEND"[..]));
    assert!(kinds.iter().any(|kind| kind == b"IDAT"), "no image data");
    dimensions.expect("IHDR read")
}

// ---------------------------------------------------------------------------------------------
// Requests

fn upload(client: &Client, bytes: &[u8], content_type: &str, filename: Option<&str>) -> Reply {
    let path = match filename {
        Some(name) => format!("{UPLOAD}?filename={}", enc(name)),
        None => UPLOAD.to_owned(),
    };
    client.request(
        "POST",
        &path,
        &[("Content-Type", content_type)],
        Some(bytes),
    )
}

/// Uploads, asserting success; returns the `mxc://` URI.
fn upload_ok(client: &Client, bytes: &[u8], content_type: &str, filename: Option<&str>) -> String {
    let reply = upload(client, bytes, content_type, filename);
    let body = reply.json();
    assert_eq!(reply.status, 200, "upload: {body:#}");
    body["content_uri"]
        .as_str()
        .unwrap_or_else(|| panic!("no content_uri in {body:#}"))
        .to_owned()
}

/// `server/media_id` of an `mxc://` URI, encoded for a path.
fn mxc_path(mxc: &str) -> String {
    let rest = mxc.strip_prefix("mxc://").expect("an mxc URI");
    let (server, id) = rest.split_once('/').expect("server/id");
    format!("{}/{}", enc(server), enc(id))
}

fn download(client: &Client, mxc: &str) -> Reply {
    client.request(
        "GET",
        &format!("{V1}/download/{}", mxc_path(mxc)),
        &[],
        None,
    )
}

fn thumbnail(client: &Client, mxc: &str, width: u32, height: u32, method: &str) -> Reply {
    let path = format!(
        "{V1}/thumbnail/{}?width={width}&height={height}&method={method}",
        mxc_path(mxc)
    );
    client.request("GET", &path, &[], None)
}

/// `(status, json)` of a reply, for [`assert_error`].
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

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(files_under(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn media_files(env: &TestEnv) -> Vec<PathBuf> {
    files_under(&env.data_dir().join("media"))
}

fn staging_files(env: &TestEnv) -> Vec<PathBuf> {
    files_under(&env.data_dir().join(".media-staging"))
}

/// Some bytes that are no image: long enough to cross the server's read chunks.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn uploads_download_byte_for_byte_with_the_security_headers() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bytes = payload(600_000);
    let mxc = upload_ok(&alice, &bytes, "application/octet-stream", None);
    let id = mxc
        .strip_prefix(&format!("mxc://{}/", env.server_name()))
        .unwrap_or_else(|| panic!("{mxc} is not one of ours"));
    assert!(
        id.len() >= 24
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "media IDs are long and URL-safe: {id}"
    );

    // Another user downloads it.
    let bob = env.register("bob");
    let reply = download(&bob, &mxc);
    assert_ok(&reply, "download");
    assert!(
        reply.body == bytes,
        "downloaded bytes differ from the upload"
    );
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(reply.header("content-length"), Some("600000"));
    assert_eq!(reply.header("content-disposition"), Some("attachment"));
    assert_eq!(
        reply.header("cross-origin-resource-policy"),
        Some("cross-origin")
    );
    let csp = reply.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("sandbox") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));

    // Empty uploads are media too.
    let empty = upload_ok(&alice, b"", "text/plain", None);
    let reply = download(&alice, &empty);
    assert_ok(&reply, "empty download");
    assert!(reply.body.is_empty());

    let config = alice.get_ok(&format!("{V1}/config"));
    assert_eq!(config["m.upload.size"], 50 * 1024 * 1024);
    let legacy = alice.get_ok(&format!("{LEGACY}/config"));
    assert_eq!(legacy, config);
}

#[test]
fn file_names_and_content_disposition_follow_the_spec() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let named = upload_ok(&alice, b"hello", "text/plain", Some("notes.txt"));
    let reply = download(&alice, &named);
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(
        reply.header("content-disposition"),
        Some("inline; filename=\"notes.txt\"")
    );
    // The file-name route overrides the name.
    let path = format!(
        "{V1}/download/{}/{}",
        mxc_path(&named),
        enc("other name.txt")
    );
    let reply = alice.request("GET", &path, &[], None);
    assert_ok(&reply, "download with a file name");
    assert_eq!(reply.body, b"hello");
    assert_eq!(
        reply.header("content-disposition"),
        Some("inline; filename=\"other name.txt\"")
    );

    // Types that could run script in a browser are attachments.
    let html = upload_ok(
        &alice,
        b"<script>alert(1)</script>",
        "text/html",
        Some("x.html"),
    );
    let reply = download(&alice, &html);
    assert_eq!(reply.header("content-type"), Some("text/html"));
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"x.html\"")
    );

    // Names outside plain ASCII are encoded per RFC 8187.
    let pdf = upload_ok(
        &alice,
        b"%PDF-1.4",
        "application/pdf",
        Some("résumé \"v2\".pdf"),
    );
    let reply = download(&alice, &pdf);
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf")
    );

    // No name given, none sent; no type given, octet-stream.
    let anonymous = alice.request("POST", UPLOAD, &[("Content-Type", "")], Some(b"x"));
    let mxc = anonymous.json()["content_uri"]
        .as_str()
        .expect("uri")
        .to_owned();
    let reply = download(&alice, &mxc);
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(reply.header("content-disposition"), Some("attachment"));

    // A control character in a name is refused.
    let reply = upload(&alice, b"x", "text/plain", Some("bad\nname"));
    assert_error(&error_of(&reply), 400, "M_INVALID_PARAM");
}

#[test]
fn thumbnails_scale_and_crop_to_the_requested_size_and_are_cached() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let source = png(400, 200);
    let mxc = upload_ok(&alice, &source, "image/png", Some("gradient.png"));

    let check = |width: u32, height: u32, method: &str, want: (u32, u32)| -> Vec<u8> {
        let reply = thumbnail(&alice, &mxc, width, height, method);
        assert_ok(&reply, &format!("thumbnail {width}x{height} {method}"));
        assert_eq!(reply.header("content-type"), Some("image/png"));
        assert_eq!(
            reply.header("content-disposition"),
            Some("inline; filename=\"thumbnail.png\"")
        );
        assert_eq!(
            reply.header("cross-origin-resource-policy"),
            Some("cross-origin")
        );
        assert_eq!(
            png_dimensions(&reply.body),
            want,
            "thumbnail {width}x{height} {method}"
        );
        reply.body
    };
    // Scale keeps the aspect and fits inside the box.
    check(100, 100, "scale", (100, 50));
    check(320, 240, "scale", (320, 160));
    check(96, 96, "crop", (96, 96));
    check(64, 32, "crop", (64, 32));
    check(32, 64, "crop", (32, 64));
    // Never upscaled: larger boxes get the original, a larger crop its aspect at source size.
    let original = check(800, 600, "scale", (400, 200));
    assert!(
        original == source,
        "a source inside the box is served as it is"
    );
    check(800, 800, "crop", (200, 200));
    // `method` defaults to scale.
    let reply = alice.request(
        "GET",
        &format!("{V1}/thumbnail/{}?width=100&height=100", mxc_path(&mxc)),
        &[],
        None,
    );
    assert_eq!(png_dimensions(&reply.body), (100, 50));

    // The cache: one row per distinct request, and repeated requests give identical bytes.
    let first = check(50, 50, "crop", (50, 50));
    let again = check(50, 50, "crop", (50, 50));
    assert!(first == again);
    let db = rusqlite::Connection::open_with_flags(
        env.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database read-only");
    let rows: i64 = db
        .query_row(
            "SELECT count(*) FROM media_thumbnails WHERE width = 50 AND height = 50",
            [],
            |row| row.get(0),
        )
        .expect("count thumbnails");
    assert_eq!(rows, 1);
    assert!(staging_files(&env).is_empty(), "{:?}", staging_files(&env));

    // Parameters are checked.
    let bad = |query: &str, errcode: &str| {
        let path = format!("{V1}/thumbnail/{}?{query}", mxc_path(&mxc));
        assert_error(
            &error_of(&alice.request("GET", &path, &[], None)),
            400,
            errcode,
        );
    };
    bad("height=10", "M_MISSING_PARAM");
    bad("width=10", "M_MISSING_PARAM");
    bad("width=0&height=10", "M_INVALID_PARAM");
    bad("width=-5&height=10", "M_INVALID_PARAM");
    bad("width=ten&height=10", "M_INVALID_PARAM");
    bad("width=10&height=10&method=zoom", "M_INVALID_PARAM");
}

#[test]
fn the_thumbnail_cache_of_an_image_is_bounded() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let mxc = upload_ok(&alice, &png(300, 300), "image/png", None);
    for side in 10..=40 {
        let reply = thumbnail(&alice, &mxc, side, side, "crop");
        assert_ok(&reply, &format!("thumbnail {side}"));
        assert_eq!(png_dimensions(&reply.body), (side, side));
    }
    let db = rusqlite::Connection::open_with_flags(
        env.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database read-only");
    let rows: i64 = db
        .query_row("SELECT count(*) FROM media_thumbnails", [], |row| {
            row.get(0)
        })
        .expect("count thumbnails");
    assert_eq!(rows, 16, "at most 16 thumbnails are kept per image");
    assert_eq!(
        media_files(&env).len(),
        17,
        "the source and the kept thumbnails"
    );
    assert!(staging_files(&env).is_empty(), "{:?}", staging_files(&env));
}

#[test]
fn identical_uploads_share_one_file() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let bytes = payload(10_000);
    let first = upload_ok(&alice, &bytes, "application/octet-stream", Some("a.bin"));
    let second = upload_ok(&bob, &bytes, "text/plain", Some("b.txt"));
    assert_ne!(first, second, "every upload gets its own media ID");
    assert_eq!(media_files(&env).len(), 1, "{:?}", media_files(&env));
    // Each ID keeps its own type and name.
    let reply = download(&alice, &second);
    assert_eq!(reply.body, bytes);
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(
        reply.header("content-disposition"),
        Some("inline; filename=\"b.txt\"")
    );
    assert_eq!(download(&bob, &first).body, bytes);
    upload_ok(&alice, b"something else", "text/plain", None);
    assert_eq!(media_files(&env).len(), 2);
    // Files are named by their content's SHA-256, in a two-character fan-out directory.
    for file in media_files(&env) {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let parent = file.parent().and_then(Path::file_name).expect("parent");
        assert_eq!(name.len(), 64, "{name}");
        assert_eq!(parent.to_string_lossy(), &name[..2]);
    }
}

/// Sends an upload with a chunked body (no `Content-Length`) of `total` bytes and returns the
/// status line and body of the answer.
fn chunked_upload(addr: SocketAddr, token: &str, total: usize) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let head = format!(
        "POST {UPLOAD} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    );
    let sender = thread::spawn(move || {
        // Write errors are expected once the server has answered and closed.
        let _ = writer.write_all(head.as_bytes());
        let chunk = vec![b'x'; 1024];
        for _ in 0..total / chunk.len() {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            if writer.write_all(&frame).is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let mut received = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|length| body.len() >= length) {
                break;
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = sender.join();
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn uploads_over_the_limit_are_refused_with_m_too_large() {
    let env = TestEnv::with_config(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n\
         [media]\nmax_upload_bytes = 4096\n",
    );
    let alice = env.register("alice");
    assert_eq!(alice.get_ok(&format!("{V1}/config"))["m.upload.size"], 4096);
    upload_ok(&alice, &payload(4096), "application/octet-stream", None);
    let before = media_files(&env).len();

    // Declared too large: refused before the body is read.
    let token = alice.access_token.clone().expect("token");
    let reply = raw_http(
        env.addr(),
        &format!(
            "POST {UPLOAD} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/octet-stream",
            env.addr()
        ),
        &payload(4 * 1024 * 1024),
    )
    .expect("raw upload");
    assert_error(&error_of(&reply), 413, "M_TOO_LARGE");

    // Just over, through the ordinary client.
    let reply = upload(&alice, &payload(4097), "application/octet-stream", None);
    assert_error(&error_of(&reply), 413, "M_TOO_LARGE");

    // No length declared: refused as the stream passes the limit.
    let reply = chunked_upload(env.addr(), &token, 1024 * 1024);
    assert_error(&reply, 413, "M_TOO_LARGE");

    // Nothing of the refused uploads stays behind.
    assert_eq!(media_files(&env).len(), before);
    assert!(staging_files(&env).is_empty(), "{:?}", staging_files(&env));
    // The server is fine and still takes uploads that fit.
    upload_ok(&alice, b"small", "text/plain", None);
}

#[test]
fn the_per_user_quota_is_enforced() {
    let env = TestEnv::with_config(
        "[registration]\nenabled = true\n\n[rate_limit]\nenabled = false\n\n\
         [media]\nuser_quota_bytes = 3000\n",
    );
    let alice = env.register("alice");
    let bob = env.register("bob");
    upload_ok(&alice, &payload(2000), "application/octet-stream", None);
    let reply = upload(&alice, &payload(1500), "application/octet-stream", None);
    assert_error(&error_of(&reply), 403, "M_FORBIDDEN");
    // Exactly up to the quota is fine; one byte more is not, even of content already stored.
    upload_ok(&alice, &payload(1000), "application/octet-stream", None);
    let reply = upload(&alice, &payload(1), "application/octet-stream", None);
    assert_error(&error_of(&reply), 403, "M_FORBIDDEN");
    // Quotas are per user.
    upload_ok(&bob, &payload(2000), "application/octet-stream", None);
    // Async uploads count too.
    let created = alice.post_ok("/_matrix/media/v1/create", &json!({}));
    let uri = created["content_uri"].as_str().expect("uri");
    let reply = alice.request(
        "PUT",
        &format!("{UPLOAD}/{}", mxc_path(uri)),
        &[("Content-Type", "text/plain")],
        Some(b"x"),
    );
    assert_error(&error_of(&reply), 403, "M_FORBIDDEN");
}

#[test]
fn async_uploads_fill_a_created_id_once() {
    let env = TestEnv::unlimited();
    let alice = env.register("alice");
    let bob = env.register("bob");
    let created = alice.post_ok("/_matrix/media/v1/create", &json!({}));
    let uri = created["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    assert!(
        uri.starts_with(&format!("mxc://{}/", env.server_name())),
        "{uri}"
    );
    assert!(
        created["unused_expires_at"].as_i64().is_some(),
        "{created:#}"
    );
    let put_path = format!("{UPLOAD}/{}?filename=later.txt", mxc_path(&uri));

    // Not there yet.
    assert_error(
        &error_of(&download(&alice, &uri)),
        504,
        "M_NOT_YET_UPLOADED",
    );
    // Only its creator may fill it.
    let reply = bob.request(
        "PUT",
        &put_path,
        &[("Content-Type", "text/plain")],
        Some(b"bob"),
    );
    assert_error(&error_of(&reply), 403, "M_FORBIDDEN");
    let reply = alice.request(
        "PUT",
        &put_path,
        &[("Content-Type", "text/plain")],
        Some(b"late"),
    );
    assert_ok(&reply, "PUT to a created ID");
    assert_eq!(reply.json(), json!({}));
    let reply = download(&bob, &uri);
    assert_eq!(reply.body, b"late");
    assert_eq!(
        reply.header("content-disposition"),
        Some("inline; filename=\"later.txt\"")
    );
    // Only once.
    let reply = alice.request(
        "PUT",
        &put_path,
        &[("Content-Type", "text/plain")],
        Some(b"again"),
    );
    assert_error(&error_of(&reply), 409, "M_CANNOT_OVERWRITE_MEDIA");
    // IDs we never issued.
    let reply = alice.request(
        "PUT",
        &format!("{UPLOAD}/{}/NotCreatedByCreate0000000", env.server_name()),
        &[],
        Some(b"x"),
    );
    assert_error(&error_of(&reply), 404, "M_NOT_FOUND");

    // Pending uploads per user are limited.
    let mut limited = None;
    for _ in 0..20 {
        let (status, body) = alice.post("/_matrix/media/v1/create", &json!({}));
        if status != 200 {
            limited = Some((status, body));
            break;
        }
    }
    let limited = limited.expect("pending uploads are limited");
    assert_error(&limited, 429, "M_LIMIT_EXCEEDED");
}

#[test]
fn media_routes_need_an_access_token() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let mxc = upload_ok(&alice, &png(10, 10), "image/png", None);
    let anon = env.anon();
    let paths = [
        format!("{V1}/download/{}", mxc_path(&mxc)),
        format!("{V1}/download/{}/name.png", mxc_path(&mxc)),
        format!("{V1}/thumbnail/{}?width=5&height=5", mxc_path(&mxc)),
        format!("{V1}/config"),
        format!("{V1}/preview_url?url=http%3A%2F%2Fexample.org"),
        format!("{LEGACY}/config"),
    ];
    for path in &paths {
        assert_error(&anon.get(path), 401, "M_MISSING_TOKEN");
        assert_error(&env.with_token("nope").get(path), 401, "M_UNKNOWN_TOKEN");
    }
    let reply = anon.request(
        "POST",
        UPLOAD,
        &[("Content-Type", "text/plain")],
        Some(b"x"),
    );
    assert_error(&error_of(&reply), 401, "M_MISSING_TOKEN");
    assert_error(
        &anon.post("/_matrix/media/v1/create", &json!({})),
        401,
        "M_MISSING_TOKEN",
    );
    // The access token may also come as a query parameter.
    let token = alice.access_token.clone().expect("token");
    let reply = anon.request(
        "GET",
        &format!("{V1}/download/{}?access_token={token}", mxc_path(&mxc)),
        &[],
        None,
    );
    assert_ok(&reply, "download with a query token");
}

#[test]
fn unknown_and_remote_media_are_not_found() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let server = env.server_name();
    for mxc in [
        format!("mxc://{server}/AAAAAAAAAAAAAAAAAAAAAAAA"),
        "mxc://other.example/AAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        format!("mxc://{server}/..%2F..%2Fhomeserver.db"),
    ] {
        let path = format!("{V1}/download/{}", mxc_path(&mxc));
        assert_error(&alice.get(&path), 404, "M_NOT_FOUND");
        assert_error(
            &error_of(&thumbnail(&alice, &mxc, 32, 32, "crop")),
            404,
            "M_NOT_FOUND",
        );
    }
    // A traversal attempt with literal dots never reaches a file either.
    let reply = alice.request("GET", &format!("{V1}/download/{server}/..."), &[], None);
    assert_error(&error_of(&reply), 404, "M_NOT_FOUND");
}

#[test]
fn undecodable_and_oversized_images_fail_cleanly() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let garbage = upload_ok(&alice, &b"not a png at all ".repeat(100), "image/png", None);
    let text = upload_ok(&alice, b"plain words", "text/plain", None);
    let mut truncated = png(300, 300);
    truncated.truncate(truncated.len() / 2);
    let truncated = upload_ok(&alice, &truncated, "image/png", None);
    for mxc in [&garbage, &text, &truncated] {
        for method in ["crop", "scale"] {
            let reply = thumbnail(&alice, mxc, 32, 32, method);
            assert_error(&error_of(&reply), 404, "M_NOT_FOUND");
        }
    }
    // Headers claiming enormous sizes are refused before any pixel is decoded.
    for (width, height) in [(100_000, 100_000), (6_000, 5_000), (1, 20_000)] {
        let mxc = upload_ok(&alice, &png_claiming(width, height), "image/png", None);
        let reply = thumbnail(&alice, &mxc, 32, 32, "scale");
        assert_error(&error_of(&reply), 413, "M_TOO_LARGE");
    }
    // The media itself still downloads, and the server is unharmed.
    assert_eq!(download(&alice, &garbage).status, 200);
    alice.get_ok("/_matrix/client/versions");
    let fine = upload_ok(&alice, &png(64, 64), "image/png", None);
    assert_eq!(
        png_dimensions(&thumbnail(&alice, &fine, 32, 32, "crop").body),
        (32, 32)
    );
}

#[test]
fn legacy_routes_are_frozen_unless_enabled_and_previews_are_unrecognized() {
    let env = TestEnv::dev();
    let alice = env.register("alice");
    let mxc = upload_ok(&alice, &png(40, 20), "image/png", Some("p.png"));
    for path in [
        format!("{LEGACY}/download/{}", mxc_path(&mxc)),
        format!("{LEGACY}/download/{}/p.png", mxc_path(&mxc)),
        format!("{LEGACY}/thumbnail/{}?width=10&height=10", mxc_path(&mxc)),
    ] {
        assert_error(&env.anon().get(&path), 404, "M_NOT_FOUND");
        assert_error(&alice.get(&path), 404, "M_NOT_FOUND");
    }
    for path in [
        format!("{V1}/preview_url?url=http%3A%2F%2Fexample.org"),
        format!("{LEGACY}/preview_url?url=http%3A%2F%2Fexample.org"),
    ] {
        assert_error(&alice.get(&path), 404, "M_UNRECOGNIZED");
    }

    let env = TestEnv::with_config(
        "[registration]\nenabled = true\n\n[media]\nlegacy_unauthenticated_downloads = true\n",
    );
    let alice = env.register("alice");
    let bytes = png(40, 20);
    let mxc = upload_ok(&alice, &bytes, "image/png", Some("p.png"));
    let reply = env.anon().request(
        "GET",
        &format!("{LEGACY}/download/{}", mxc_path(&mxc)),
        &[],
        None,
    );
    assert_ok(&reply, "legacy download when enabled");
    assert_eq!(reply.body, bytes);
    assert_eq!(
        reply.header("content-disposition"),
        Some("inline; filename=\"p.png\"")
    );
    let reply = env.anon().request(
        "GET",
        &format!(
            "{LEGACY}/thumbnail/{}?width=10&height=10&method=crop",
            mxc_path(&mxc)
        ),
        &[],
        None,
    );
    assert_eq!(png_dimensions(&reply.body), (10, 10));
}

#[test]
fn media_and_thumbnails_survive_a_restart() {
    let mut env = TestEnv::dev();
    let alice = env.register("alice");
    let bytes = payload(70_000);
    let file = upload_ok(&alice, &bytes, "application/octet-stream", Some("data.bin"));
    let image = upload_ok(&alice, &png(120, 90), "image/png", None);
    let thumb = thumbnail(&alice, &image, 60, 60, "crop").body;
    assert_eq!(png_dimensions(&thumb), (60, 60));

    env.stop();
    env.restart();

    let reply = download(&alice, &file);
    assert_ok(&reply, "download after restart");
    assert!(reply.body == bytes);
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"data.bin\"")
    );
    assert!(thumbnail(&alice, &image, 60, 60, "crop").body == thumb);
    // And after a kill -9 too: what was acknowledged is on disk.
    let late = upload_ok(&alice, b"acknowledged", "text/plain", None);
    env.kill9();
    env.restart();
    assert_eq!(download(&alice, &late).body, b"acknowledged");
}
