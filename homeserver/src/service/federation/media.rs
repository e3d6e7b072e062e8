//! This unit's media for other units (spec: Server-Server API, "Content Repository"),
//! resident side: [`download`] and [`thumbnail`] give a peer this unit's own media for
//! `GET /_matrix/federation/v1/media/{download,thumbnail}/{mediaId}`; the HTTP layer frames
//! the answer as `multipart/mixed`. Only media this unit issued is served this way, never
//! items it cached from other units (the spec has servers fetch from the origin).
//!
//! The requesting side (fetching another unit's item) is the transport's
//! (`transport::media`); `service::media` calls it and stores what comes back.

use crate::error::Result;
use crate::service::Server;
use crate::service::media::{self, Media, Remote, ThumbnailRequest};

/// # Resident download
/// This unit's own media item `media_id`, for the allow-listed peer `origin`.
pub async fn download(server: &Server, origin: &str, media_id: &str) -> Result<Media> {
    tracing::debug!(peer = %origin, media_id, "serving media to a peer");
    let own = server.server_name().as_str();
    media::download(server, own, media_id, Remote::LOCAL_ONLY).await
}

/// # Resident thumbnail
/// A thumbnail of this unit's own media item `media_id`, for the allow-listed peer `origin`.
pub async fn thumbnail(
    server: &Server,
    origin: &str,
    media_id: &str,
    request: ThumbnailRequest,
) -> Result<Media> {
    tracing::debug!(peer = %origin, media_id, "serving a thumbnail to a peer");
    let own = server.server_name().as_str();
    media::thumbnail(server, own, media_id, request, Remote::LOCAL_ONLY).await
}
