//! Media metadata: which `mxc://` IDs exist, who uploaded them, and which content hash, type
//! and file name each carries; the items of other units cached here (`remote_media`); plus
//! the thumbnail cache.
//!
//! The bytes themselves live on disk under the data dir, named by their SHA-256 (see
//! `service::media`); nothing here touches files.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::Result;

/// The content of an uploaded media item.
#[derive(Debug, Clone)]
pub struct Content {
    /// SHA-256 of the bytes, lowercase hex: the file's name in the content store.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The `Content-Type` the uploader declared.
    pub content_type: String,
    /// The file name the uploader gave, if any.
    pub filename: Option<String>,
}

/// One `mxc://` ID we issued.
#[derive(Debug, Clone)]
pub struct MediaRow {
    /// Who created it.
    pub uploader: String,
    /// The bytes, once uploaded; `None` while an async upload is pending.
    pub content: Option<Content>,
    /// Until when a pending upload may still arrive.
    pub expires_ts: Option<i64>,
}

fn media_row(row: &Row<'_>) -> rusqlite::Result<MediaRow> {
    let sha256: Option<String> = row.get(2)?;
    let content = match sha256 {
        Some(sha256) => Some(Content {
            sha256,
            size: row.get(3)?,
            content_type: row.get(4)?,
            filename: row.get(5)?,
        }),
        None => None,
    };
    Ok(MediaRow {
        uploader: row.get(0)?,
        expires_ts: row.get(1)?,
        content,
    })
}

/// Loads a media item.
pub fn get_media(conn: &Connection, media_id: &str) -> Result<Option<MediaRow>> {
    Ok(conn
        .query_row(
            "SELECT uploader, expires_ts, sha256, size, content_type, filename
             FROM media WHERE media_id = ?1",
            params![media_id],
            media_row,
        )
        .optional()?)
}

/// Records a completed upload under a new media ID.
pub fn insert_media(
    conn: &Connection,
    media_id: &str,
    uploader: &str,
    content: &Content,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO media (media_id, uploader, created_ts, sha256, size, content_type, filename,
                            uploaded_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?3)",
        params![
            media_id,
            uploader,
            now,
            content.sha256,
            content.size,
            content.content_type,
            content.filename
        ],
    )?;
    Ok(())
}

/// Reserves a media ID whose bytes will come later (async upload).
pub fn insert_pending(
    conn: &Connection,
    media_id: &str,
    uploader: &str,
    now: i64,
    expires_ts: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO media (media_id, uploader, created_ts, expires_ts) VALUES (?1, ?2, ?3, ?4)",
        params![media_id, uploader, now, expires_ts],
    )?;
    Ok(())
}

/// Fills in the bytes of a pending media ID; `Ok(false)` if it is not (or no longer) pending
/// for this uploader.
pub fn complete_pending(
    conn: &Connection,
    media_id: &str,
    uploader: &str,
    content: &Content,
    now: i64,
) -> Result<bool> {
    let updated = conn.execute(
        "UPDATE media SET sha256 = ?3, size = ?4, content_type = ?5, filename = ?6,
                          uploaded_ts = ?7, expires_ts = NULL
         WHERE media_id = ?1 AND uploader = ?2 AND sha256 IS NULL AND expires_ts > ?7",
        params![
            media_id,
            uploader,
            content.sha256,
            content.size,
            content.content_type,
            content.filename,
            now
        ],
    )?;
    Ok(updated == 1)
}

/// Forgets a user's pending uploads that expired, so they stop counting against the limit.
pub fn delete_expired_pending(conn: &Connection, uploader: &str, now: i64) -> Result<()> {
    conn.execute(
        "DELETE FROM media WHERE uploader = ?1 AND sha256 IS NULL AND expires_ts <= ?2",
        params![uploader, now],
    )?;
    Ok(())
}

/// A user's pending (created, not yet uploaded, not expired) uploads: how many, and when the
/// first of them expires.
pub fn pending_uploads(conn: &Connection, uploader: &str, now: i64) -> Result<PendingUploads> {
    Ok(conn.query_row(
        "SELECT count(*), min(expires_ts) FROM media
         WHERE uploader = ?1 AND sha256 IS NULL AND expires_ts > ?2",
        params![uploader, now],
        |row| {
            Ok(PendingUploads {
                count: row.get(0)?,
                first_expiry: row.get(1)?,
            })
        },
    )?)
}

/// A user's pending uploads, counted.
#[derive(Debug, Clone, Copy)]
pub struct PendingUploads {
    /// How many there are.
    pub count: u64,
    /// When the first of them expires (ms since the epoch); `None` when there are none.
    pub first_expiry: Option<i64>,
}

/// Total bytes a user has uploaded (each upload counted, even when its bytes are shared).
pub fn usage(conn: &Connection, uploader: &str) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT coalesce(sum(size), 0) FROM media WHERE uploader = ?1",
        params![uploader],
        |row| row.get(0),
    )?)
}

fn content_row(row: &Row<'_>) -> rusqlite::Result<Content> {
    Ok(Content {
        sha256: row.get(0)?,
        size: row.get(1)?,
        content_type: row.get(2)?,
        filename: row.get(3)?,
    })
}

/// Loads a cached item of another unit (`mxc://{origin}/{media_id}`).
pub fn get_remote(conn: &Connection, origin: &str, media_id: &str) -> Result<Option<Content>> {
    Ok(conn
        .query_row(
            "SELECT sha256, size, content_type, filename FROM remote_media
             WHERE origin = ?1 AND media_id = ?2",
            params![origin, media_id],
            content_row,
        )
        .optional()?)
}

/// Records an item fetched from another unit (its file already in place). Items never change,
/// so a concurrent fetch that recorded it first wins.
pub fn insert_remote(
    conn: &Connection,
    origin: &str,
    media_id: &str,
    content: &Content,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO remote_media (origin, media_id, sha256, size, content_type, filename,
                                   fetched_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT DO NOTHING",
        params![
            origin,
            media_id,
            content.sha256,
            content.size,
            content.content_type,
            content.filename,
            now
        ],
    )?;
    Ok(())
}

/// What a thumbnail is, as asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbnailKey<'a> {
    /// SHA-256 of the source bytes.
    pub source_sha256: &'a str,
    /// Requested width.
    pub width: u32,
    /// Requested height.
    pub height: u32,
    /// `crop` or `scale`.
    pub method: &'a str,
}

/// A cached thumbnail.
#[derive(Debug, Clone)]
pub struct ThumbnailRow {
    /// SHA-256 of the thumbnail bytes (its file in the content store).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// `image/png` or `image/jpeg`.
    pub content_type: String,
}

fn thumbnail_row(row: &Row<'_>) -> rusqlite::Result<ThumbnailRow> {
    Ok(ThumbnailRow {
        sha256: row.get(0)?,
        size: row.get(1)?,
        content_type: row.get(2)?,
    })
}

/// Looks up a cached thumbnail.
pub fn get_thumbnail(conn: &Connection, key: ThumbnailKey<'_>) -> Result<Option<ThumbnailRow>> {
    Ok(conn
        .query_row(
            "SELECT sha256, size, content_type FROM media_thumbnails
             WHERE source_sha256 = ?1 AND width = ?2 AND height = ?3 AND method = ?4",
            params![key.source_sha256, key.width, key.height, key.method],
            thumbnail_row,
        )
        .optional()?)
}

/// How many thumbnails of one source are cached (the cache per source is bounded).
pub fn thumbnail_count(conn: &Connection, source_sha256: &str) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM media_thumbnails WHERE source_sha256 = ?1",
        params![source_sha256],
        |row| row.get(0),
    )?)
}

/// Caches a thumbnail; a concurrent request that cached the same one first wins.
pub fn insert_thumbnail(
    conn: &Connection,
    key: ThumbnailKey<'_>,
    thumbnail: &ThumbnailRow,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO media_thumbnails (source_sha256, width, height, method, sha256, size,
                                       content_type, created_ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT DO NOTHING",
        params![
            key.source_sha256,
            key.width,
            key.height,
            key.method,
            thumbnail.sha256,
            thumbnail.size,
            thumbnail.content_type,
            now
        ],
    )?;
    Ok(())
}
