//! The media repository: uploads (direct and asynchronous), downloads, thumbnails and quotas.
//!
//! Bytes live in the content store ([`content`]): files on disk under `<data_dir>/media/`
//! named by their SHA-256, so identical uploads share one file and `appliance backup` carries
//! them with the rest of the unit. A file is durably in place before the database row naming
//! it (`store::media`) commits; a crash can at worst leave a file no row names, which costs
//! disk but nothing else.
//!
//! Thumbnails ([`thumbnail`]) are made on the blocking pool, two at a time, within fixed
//! bounds, and cached (file and row) keyed by the source's hash and the request, so each is
//! made once.
//!
//! Media of other units (`mxc://<peer>/<id>`) is fetched once from that allow-listed peer
//! (`transport::media`), stored in the same content store and recorded in
//! `remote_media`, then served like local media: from the cache, even while the peer is
//! down, and thumbnailed here from the cached original. Cached items belong to no local user,
//! so they count against nobody's quota. Concurrent first reads of one item make one fetch.
//!
//! [`serve`] holds what the client and federation routes share to put media on the wire.

mod content;
pub mod serve;
mod thumbnail;

pub use content::MEDIA_DIR;

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::body::Body;
use ruma::UserId;
use tokio::sync::Semaphore;

use super::Server;
use crate::error::{Error, ErrorCode, Result};
use crate::store::media::{self as store, Content, ThumbnailKey, ThumbnailRow};
use crate::util::{now_ms, random_string};
use content::{Dirs, too_large};
use thumbnail::{Thumbnail, not_thumbnailable};

/// Length of a media ID: 24 characters of `[A-Za-z0-9]` are 142 random bits, unguessable.
const MEDIA_ID_LEN: usize = 24;
/// How long an ID from `/create` waits for its bytes (the spec recommends 24 hours).
const PENDING_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;
/// Unfinished async uploads one user may hold at once; more are `M_LIMIT_EXCEEDED`.
const MAX_PENDING_UPLOADS: u64 = 10;
/// Longest `Content-Type` or file name stored with an upload.
const MAX_LABEL_BYTES: usize = 255;
/// Largest thumbnail side served; larger requests are scaled down to fit, aspect kept.
pub const MAX_THUMBNAIL_SIDE: u32 = 2048;
/// Thumbnails cached per source; requests for further sizes are answered but not kept, so
/// asking for every size cannot fill the disk.
const CACHED_THUMBNAILS_PER_SOURCE: u64 = 16;
/// Thumbnails being made at once. Decoding a large photo takes a core and up to 64 MiB; a
/// burst of first views of a room full of images must neither starve the runtime nor multiply
/// memory use. A process-wide limit on a machine resource, hence a static (as for password
/// hashing).
static THUMBNAILERS: Semaphore = Semaphore::const_new(2);
/// Items fetched from other units at once. A fetched item is held in memory (up to
/// `[media] max_upload_bytes`) until it is written out, so this bounds that memory.
static REMOTE_FETCHES: Semaphore = Semaphore::const_new(3);
/// One lock per remote item being fetched (`origin/media_id`), so concurrent first reads of
/// it wait for one fetch instead of each making their own. Entries live only while someone
/// holds or waits for them. Process-wide, like the limits above.
static FETCHING: KeyLocks = LazyLock::new(Mutex::default);
/// One lock per source image being decoded (by SHA-256), so concurrent requests for sizes of
/// one image decode it one after another (each finding the cache or the size verdict of the
/// one before) instead of holding several decoded copies at once.
static DECODING: KeyLocks = LazyLock::new(Mutex::default);

/// Locks by key that live only while someone holds or waits for them.
type KeyLocks = LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;
/// How long a read waits for a peer to start answering when the client does not say
/// (`timeout_ms`, the spec's default of 20 seconds).
const DEFAULT_REMOTE_TIMEOUT_MS: u64 = 20_000;
/// The longest `timeout_ms` honoured (the spec asks for a maximum).
const MAX_REMOTE_TIMEOUT_MS: u64 = 60_000;
/// The shortest wait for a peer, whatever `timeout_ms` says: a TLS handshake must fit.
const MIN_REMOTE_TIMEOUT_MS: u64 = 500;

/// Whether and how long a read may go to another unit for media this unit does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// `false` (the client's `allow_remote=false`): only what this unit holds, no fetch.
    pub allow: bool,
    /// The client's `timeout_ms`: how long to wait for the peer to start answering.
    pub timeout_ms: Option<u64>,
}

impl Remote {
    /// Never fetch: reads made for peers, which must only ever serve this unit's own media.
    pub const LOCAL_ONLY: Self = Self {
        allow: false,
        timeout_ms: None,
    };

    /// The wait for the peer, within the bounds this unit keeps.
    fn deadline(self) -> Duration {
        let ms = self
            .timeout_ms
            .unwrap_or(DEFAULT_REMOTE_TIMEOUT_MS)
            .clamp(MIN_REMOTE_TIMEOUT_MS, MAX_REMOTE_TIMEOUT_MS);
        Duration::from_millis(ms)
    }
}

/// What the uploader said about an upload, from its headers and query.
#[derive(Debug, Default)]
pub struct UploadMeta {
    /// The `Content-Type` header; `application/octet-stream` when absent.
    pub content_type: Option<String>,
    /// The `filename` query parameter.
    pub filename: Option<String>,
    /// The `Content-Length` header, so an oversized upload is refused before it is read.
    pub content_length: Option<u64>,
}

/// A stored file ready to be sent.
#[derive(Debug)]
pub struct Media {
    /// The open file (the read side is the caller's business: stream it, don't load it).
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
    /// The content type to serve it with.
    pub content_type: String,
    /// The file name the uploader gave, if any.
    pub filename: Option<String>,
}

/// A thumbnail resizing method, as the spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Exactly the requested size (when the source is large enough), cropped to its aspect.
    Crop,
    /// The source's aspect, fitting inside the requested size.
    Scale,
}

impl Method {
    /// The wire name, also the cache key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// A thumbnail as a client asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbnailRequest {
    /// Desired width, at least 1.
    pub width: u32,
    /// Desired height, at least 1.
    pub height: u32,
    /// Resizing method.
    pub method: Method,
}

impl ThumbnailRequest {
    /// The request from the query parameters, with the spec's error codes; `method` defaults
    /// to `scale`, as in Synapse. `animated` is not asked for: thumbnails are always still
    /// images, which the spec allows for every value of it.
    pub fn from_query(
        width: Option<u32>,
        height: Option<u32>,
        method: Option<&str>,
    ) -> Result<Self> {
        let missing = |name: &str| {
            Error::new(
                ErrorCode::MissingParam,
                format!("The {name} parameter is required"),
            )
        };
        let width = width.ok_or_else(|| missing("width"))?;
        let height = height.ok_or_else(|| missing("height"))?;
        if width == 0 || height == 0 {
            return Err(Error::invalid_param("width and height must be at least 1"));
        }
        let method = match method {
            None | Some("scale") => Method::Scale,
            Some("crop") => Method::Crop,
            Some(other) => {
                return Err(Error::invalid_param(format!(
                    "Unknown thumbnail method {other:?}: use crop or scale"
                )));
            }
        };
        Ok(Self {
            width,
            height,
            method,
        })
    }

    /// The request with its longer side brought down to [`MAX_THUMBNAIL_SIDE`], aspect kept.
    fn clamped(self) -> Self {
        let longest = self.width.max(self.height);
        if longest <= MAX_THUMBNAIL_SIDE {
            return self;
        }
        let shrink = |side: u32| {
            let scaled = u64::from(side) * u64::from(MAX_THUMBNAIL_SIDE) / u64::from(longest);
            u32::try_from(scaled).unwrap_or(MAX_THUMBNAIL_SIDE).max(1)
        };
        Self {
            width: shrink(self.width),
            height: shrink(self.height),
            method: self.method,
        }
    }
}

fn unknown_media() -> Error {
    Error::not_found("Unknown media ID")
}

/// Whether `id` has the spec's media ID alphabet; anything else cannot be ours.
fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn dirs(server: &Server) -> Dirs {
    Dirs::new(&server.config.data_dir)
}

fn mxc(server: &Server, media_id: &str) -> String {
    format!("mxc://{}/{media_id}", server.server_name())
}

/// Fails with `M_FORBIDDEN` when `adding` bytes would take a user past the quota (`0`: none).
/// The spec's answer to "the user has reached a quota for uploaded content" is 403
/// `M_FORBIDDEN`.
fn check_quota(used: u64, adding: u64, quota: u64) -> Result<()> {
    if quota != 0 && used.saturating_add(adding) > quota {
        return Err(Error::forbidden(format!(
            "This upload would exceed your media quota ({used} of {quota} bytes used)"
        )));
    }
    Ok(())
}

async fn quota_allows(server: &Server, user: &str, adding: u64) -> Result<()> {
    let quota = server.config.media.user_quota_bytes;
    if quota == 0 {
        return Ok(());
    }
    let key = user.to_owned();
    let used = server
        .store
        .read(move |conn| store::usage(conn, &key))
        .await?;
    check_quota(used, adding, quota)
}

/// Whether a content type may be stored and served back as a header.
fn valid_content_type(kind: &str) -> bool {
    kind.len() <= MAX_LABEL_BYTES
        && kind.contains('/')
        && kind.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Whether a file name may be stored and served back in `Content-Disposition`.
fn valid_filename(name: &str) -> bool {
    name.len() <= MAX_LABEL_BYTES && !name.chars().any(char::is_control)
}

/// Checks the declared type, name and length; returns the type and name to store.
fn validate(meta: &UploadMeta, limit: u64) -> Result<(String, Option<String>)> {
    let content_type = match meta.content_type.as_deref().map(str::trim) {
        None | Some("") => "application/octet-stream".to_owned(),
        Some(kind) if valid_content_type(kind) => kind.to_owned(),
        Some(_) => {
            return Err(Error::invalid_param(
                "Content-Type is not a valid media type",
            ));
        }
    };
    let filename = match meta.filename.as_deref() {
        None | Some("") => None,
        Some(name) if valid_filename(name) => Some(name.to_owned()),
        Some(_) => {
            return Err(Error::invalid_param(
                "filename must be at most 255 bytes, without control characters",
            ));
        }
    };
    if meta.content_length.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    Ok((content_type, filename))
}

/// # Upload
/// Stores the body and issues a new `mxc://` URI for it.
pub async fn upload(
    server: &Server,
    uploader: &UserId,
    meta: UploadMeta,
    body: Body,
) -> Result<String> {
    let limit = server.config.media.max_upload_bytes;
    let user = uploader.to_string();
    let checked = async {
        server.store.space().check()?;
        let described = validate(&meta, limit)?;
        quota_allows(server, &user, meta.content_length.unwrap_or(0)).await?;
        Ok(described)
    };
    let (content_type, filename) = match checked.await {
        Ok(described) => described,
        Err(err) => {
            content::discard(body).await;
            return Err(err);
        }
    };
    let full = |err| server.store.disk_full_as_refusal(err);
    let staged = content::receive(dirs(server), body, limit)
        .await
        .map_err(full)?;
    quota_allows(server, &user, staged.size()).await?;
    let content = Content {
        sha256: staged.sha256().to_owned(),
        size: staged.size(),
        content_type,
        filename,
    };
    content::place(dirs(server), staged).await.map_err(full)?;
    let media_id = random_string(MEDIA_ID_LEN);
    let id = media_id.clone();
    let quota = server.config.media.user_quota_bytes;
    let (size, sha) = (content.size, content.sha256.clone());
    server
        .store
        .write(move |tx| {
            // The authoritative check: concurrent uploads of one user are serialised here.
            check_quota(store::usage(tx, &user)?, content.size, quota)?;
            store::insert_media(tx, &id, &user, &content, now_ms())
        })
        .await?;
    tracing::info!(uploader = %uploader, media_id = %media_id, size, sha256 = %sha, "stored upload");
    Ok(mxc(server, &media_id))
}

/// # Create (async upload)
/// Reserves a media ID whose bytes will come with [`upload_pending`]; returns its `mxc://` URI
/// and when the reservation expires.
pub async fn create(server: &Server, uploader: &UserId) -> Result<(String, i64)> {
    let media_id = random_string(MEDIA_ID_LEN);
    let (id, user) = (media_id.clone(), uploader.to_string());
    let expires = server
        .store
        .write(move |tx| {
            let now = now_ms();
            store::delete_expired_pending(tx, &user, now)?;
            let pending = store::pending_uploads(tx, &user, now)?;
            if pending.count >= MAX_PENDING_UPLOADS {
                // The spec's answer to too many pending uploads: 429 M_LIMIT_EXCEEDED.
                let wait = pending
                    .first_expiry
                    .map_or(0, |at| at.saturating_sub(now).max(0));
                return Err(Error::RateLimited {
                    retry_after_ms: u64::try_from(wait).unwrap_or(0),
                });
            }
            let expires = now + PENDING_LIFETIME_MS;
            store::insert_pending(tx, &id, &user, now, expires)?;
            Ok(expires)
        })
        .await?;
    Ok((mxc(server, &media_id), expires))
}

/// # Upload to a created ID
/// Stores the bytes of an ID reserved by [`create`]. Only its creator may, only once, and
/// only before it expires.
pub async fn upload_pending(
    server: &Server,
    uploader: &UserId,
    server_name: &str,
    media_id: &str,
    meta: UploadMeta,
    body: Body,
) -> Result<()> {
    let limit = server.config.media.max_upload_bytes;
    let user = uploader.to_string();
    let checked = async {
        if server_name != server.server_name().as_str() || !valid_media_id(media_id) {
            return Err(unknown_media());
        }
        server.store.space().check()?;
        let described = validate(&meta, limit)?;
        let id = media_id.to_owned();
        let row = server
            .store
            .read(move |conn| store::get_media(conn, &id))
            .await?
            .ok_or_else(unknown_media)?;
        if row.uploader != user {
            return Err(Error::forbidden(
                "This media ID was created by another user",
            ));
        }
        if row.content.is_some() {
            return Err(already_uploaded());
        }
        if row.expires_ts.is_some_and(|at| at <= now_ms()) {
            return Err(Error::not_found("This media ID has expired"));
        }
        quota_allows(server, &user, meta.content_length.unwrap_or(0)).await?;
        Ok(described)
    };
    let (content_type, filename) = match checked.await {
        Ok(described) => described,
        Err(err) => {
            content::discard(body).await;
            return Err(err);
        }
    };
    let full = |err| server.store.disk_full_as_refusal(err);
    let staged = content::receive(dirs(server), body, limit)
        .await
        .map_err(full)?;
    quota_allows(server, &user, staged.size()).await?;
    let content = Content {
        sha256: staged.sha256().to_owned(),
        size: staged.size(),
        content_type,
        filename,
    };
    content::place(dirs(server), staged).await.map_err(full)?;
    let id = media_id.to_owned();
    let quota = server.config.media.user_quota_bytes;
    server
        .store
        .write(move |tx| {
            check_quota(store::usage(tx, &user)?, content.size, quota)?;
            if store::complete_pending(tx, &id, &user, &content, now_ms())? {
                return Ok(());
            }
            match store::get_media(tx, &id)? {
                Some(row) if row.content.is_some() => Err(already_uploaded()),
                _ => Err(Error::not_found("This media ID has expired")),
            }
        })
        .await
}

/// The spec's answer to a second upload to one media ID.
fn already_uploaded() -> Error {
    Error::new(
        crate::error::ErrorCode::CannotOverwriteMedia,
        "Media already uploaded to this ID",
    )
}

/// # Download
/// Opens a media item's file: a local one, or another unit's (fetched first if `remote`
/// allows and this unit does not hold it yet).
pub async fn download(
    server: &Server,
    server_name: &str,
    media_id: &str,
    remote: Remote,
) -> Result<Media> {
    let content = content_of(server, server_name, media_id, remote).await?;
    let file = open(server, &content.sha256).await?;
    Ok(Media {
        file,
        size: content.size,
        content_type: content.content_type,
        filename: content.filename,
    })
}

/// The content of a media item, local or of another unit.
async fn content_of(
    server: &Server,
    server_name: &str,
    media_id: &str,
    remote: Remote,
) -> Result<Content> {
    if server_name == server.server_name().as_str() {
        local_content(server, media_id).await
    } else {
        remote_content(server, server_name, media_id, remote).await
    }
}

/// The content of a local, uploaded media item; `M_NOT_FOUND` for anything else.
async fn local_content(server: &Server, media_id: &str) -> Result<Content> {
    if !valid_media_id(media_id) {
        return Err(unknown_media());
    }
    let id = media_id.to_owned();
    let row = server
        .store
        .read(move |conn| store::get_media(conn, &id))
        .await?
        .ok_or_else(unknown_media)?;
    // The spec lets a server answer a pending upload early instead of waiting `timeout_ms`;
    // the client retries.
    row.content.ok_or_else(|| {
        Error::new(
            crate::error::ErrorCode::NotYetUploaded,
            "This media has not been uploaded yet",
        )
    })
}

/// The cached content of another unit's item.
async fn cached_remote(server: &Server, origin: &str, media_id: &str) -> Result<Option<Content>> {
    let (origin, id) = (origin.to_owned(), media_id.to_owned());
    server
        .store
        .read(move |conn| store::get_remote(conn, &origin, &id))
        .await
}

/// The content of another unit's item: from the cache, or fetched from that unit now.
///
/// What is cached is served even when its origin has since left the allow-list: no
/// connection is involved, and the media was part of rooms the unit shared. Everything
/// else about an origin that is not allow-listed is `M_NOT_FOUND` without any connection
/// attempt. Closed federation: the spec has servers resolve any server name; a unit dials
/// only its peer cards.
async fn remote_content(
    server: &Server,
    origin: &str,
    media_id: &str,
    remote: Remote,
) -> Result<Content> {
    if !valid_media_id(media_id) {
        return Err(unknown_media());
    }
    if let Some(content) = cached_remote(server, origin, media_id).await? {
        return Ok(content);
    }
    if !server.peers.contains(origin) {
        return Err(Error::not_found(format!(
            "{origin} is not a peer of this unit, so its media is not available here"
        )));
    }
    if !remote.allow {
        return Err(Error::not_found(
            "This media is not held here and allow_remote is false",
        ));
    }
    let key = format!("{origin}/{media_id}");
    let _one_fetch = KeyLock::acquire(&FETCHING, key).await;
    // Whoever held the lock before may have fetched it meanwhile.
    if let Some(content) = cached_remote(server, origin, media_id).await? {
        return Ok(content);
    }
    let _slot = tokio::time::timeout(remote.deadline(), REMOTE_FETCHES.acquire())
        .await
        .map_err(|_| {
            Error::new(
                ErrorCode::GatewayTimeout,
                "This unit is busy fetching other media from its peers; try again",
            )
        })?
        .map_err(|_| Error::internal("remote media fetching closed"))?;
    let limit = server.config.media.max_upload_bytes;
    let fetched = crate::transport::media::fetch(
        &server.federation,
        origin,
        media_id,
        limit,
        remote.deadline(),
    )
    .await?;
    let content_type = fetched
        .content_type
        .as_deref()
        .map(str::trim)
        .filter(|kind| valid_content_type(kind))
        .unwrap_or("application/octet-stream")
        .to_owned();
    let filename = fetched.filename.filter(|name| valid_filename(name));
    let size = fetched.bytes.len() as u64;
    let sha256 = content::store_bytes(dirs(server), fetched.bytes.into()).await?;
    let content = Content {
        sha256,
        size,
        content_type,
        filename,
    };
    let (row, origin_key, id) = (content.clone(), origin.to_owned(), media_id.to_owned());
    server
        .store
        .write(move |tx| store::insert_remote(tx, &origin_key, &id, &row, now_ms()))
        .await?;
    tracing::info!(peer = %origin, media_id, size, sha256 = %content.sha256, "cached remote media");
    Ok(content)
}

/// Holds the lock of one key in a [`KeyLocks`] map (a remote item being fetched, an image being
/// decoded); dropping it (also when the client goes away mid-way) lets the next waiter in and
/// forgets the lock once nobody uses it.
struct KeyLock {
    map: &'static KeyLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLock {
    async fn acquire(map: &'static KeyLocks, key: String) -> Self {
        let lock = {
            let mut locks = map.lock().unwrap_or_else(|poison| poison.into_inner());
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        let mut held = Self {
            map,
            key,
            guard: None,
        };
        held.guard = Some(lock.lock_owned().await);
        held
    }
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        self.guard = None;
        let mut map = self.map.lock().unwrap_or_else(|poison| poison.into_inner());
        // Only the map still refers to it: nobody holds or waits for this item.
        if map
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            map.remove(&self.key);
        }
    }
}

async fn open(server: &Server, sha256: &str) -> Result<File> {
    content::open(&dirs(server), sha256).await
}

/// # Thumbnail
/// A thumbnail of an image, local or of another unit (whose original is fetched first, as
/// for [`download`]): from the cache, or made (and cached) now.
pub async fn thumbnail(
    server: &Server,
    server_name: &str,
    media_id: &str,
    request: ThumbnailRequest,
    remote: Remote,
) -> Result<Media> {
    let request = request.clamped();
    let content = content_of(server, server_name, media_id, remote).await?;
    let source = content.sha256.clone();
    if let Some(cached) = cached_thumbnail(server, &source, request).await? {
        return open_thumbnail(server, cached).await;
    }
    // One decode of this image at a time; the lock is held until the thumbnail is cached.
    let _one_decode = KeyLock::acquire(&DECODING, source.clone()).await;
    let permit = THUMBNAILERS
        .acquire()
        .await
        .map_err(|_| Error::internal("thumbnailing closed"))?;
    // Another request for the same thumbnail may have made it while this one waited.
    if let Some(cached) = cached_thumbnail(server, &source, request).await? {
        return open_thumbnail(server, cached).await;
    }
    let path = dirs(server).content(&source)?;
    // The permit travels with the work: a client that goes away does not stop the decode, so
    // it must not free the slot before the decode ends.
    let made = tokio::task::spawn_blocking(move || {
        let made = thumbnail::make_thumbnail(&path, request);
        drop(permit);
        made
    })
    .await;
    let made = match made {
        Ok(made) => made?,
        Err(err) => {
            // A decoder bug must not take the request (or the server) down with it.
            tracing::error!(sha256 = %source, error = %err, "thumbnailing panicked");
            return Err(not_thumbnailable());
        }
    };
    let key_source = source.clone();
    let keep = server
        .store
        .read(move |conn| store::thumbnail_count(conn, &key_source))
        .await?
        < CACHED_THUMBNAILS_PER_SOURCE;
    let row = match made {
        Thumbnail::Source { content_type } => ThumbnailRow {
            sha256: source.clone(),
            size: content.size,
            content_type: content_type.to_owned(),
        },
        Thumbnail::Encoded {
            bytes,
            content_type,
        } if keep => {
            let size = bytes.len() as u64;
            let sha256 = content::store_bytes(dirs(server), bytes).await?;
            ThumbnailRow {
                sha256,
                size,
                content_type: content_type.to_owned(),
            }
        }
        Thumbnail::Encoded {
            bytes,
            content_type,
        } => {
            // The cache of this source is full: serve from an unnamed file, keep nothing.
            let size = bytes.len() as u64;
            let file = content::unnamed(dirs(server), bytes).await?;
            return Ok(Media {
                file,
                size,
                content_type: content_type.to_owned(),
                filename: None,
            });
        }
    };
    if keep {
        let cached = row.clone();
        server
            .store
            .write(move |tx| {
                if store::thumbnail_count(tx, &source)? < CACHED_THUMBNAILS_PER_SOURCE {
                    store::insert_thumbnail(
                        tx,
                        thumbnail_key(&source, request),
                        &cached,
                        now_ms(),
                    )?;
                }
                Ok(())
            })
            .await?;
    }
    open_thumbnail(server, row).await
}

fn thumbnail_key(source: &str, request: ThumbnailRequest) -> ThumbnailKey<'_> {
    ThumbnailKey {
        source_sha256: source,
        width: request.width,
        height: request.height,
        method: request.method.as_str(),
    }
}

async fn cached_thumbnail(
    server: &Server,
    source: &str,
    request: ThumbnailRequest,
) -> Result<Option<ThumbnailRow>> {
    let source = source.to_owned();
    server
        .store
        .read(move |conn| store::get_thumbnail(conn, thumbnail_key(&source, request)))
        .await
}

async fn open_thumbnail(server: &Server, row: ThumbnailRow) -> Result<Media> {
    let file = open(server, &row.sha256).await?;
    Ok(Media {
        file,
        size: row.size,
        content_type: row.content_type,
        filename: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_requests_are_clamped_keeping_the_aspect() {
        let request = |width, height, method| ThumbnailRequest {
            width,
            height,
            method,
        };
        let big = request(8192, 4096, Method::Crop).clamped();
        assert_eq!(
            (big.width, big.height),
            (MAX_THUMBNAIL_SIDE, MAX_THUMBNAIL_SIDE / 2)
        );
        let small = request(640, 480, Method::Scale).clamped();
        assert_eq!((small.width, small.height), (640, 480));
    }

    #[test]
    fn quota_zero_means_unlimited() {
        assert!(check_quota(u64::MAX, 1, 0).is_ok());
        assert!(check_quota(90, 10, 100).is_ok());
        assert!(check_quota(90, 11, 100).is_err());
    }

    #[test]
    fn media_ids_are_limited_to_the_spec_alphabet() {
        assert!(valid_media_id("AbC_12-z"));
        for bad in ["", "../etc", "a/b", "a.b", "a%2Fb", "é"] {
            assert!(!valid_media_id(bad), "{bad:?}");
        }
        assert!(valid_media_id(&random_string(MEDIA_ID_LEN)));
    }
}
