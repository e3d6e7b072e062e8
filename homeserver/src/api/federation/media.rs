//! Federation routes for media (spec: Server-Server API, "Content Repository"): a peer
//! downloads this unit's media, or a thumbnail of it, as `multipart/mixed` with two parts —
//! the metadata (`{}`) and the content with its `Content-Type` and `Content-Disposition` as a
//! client would get them. The origin is already checked against the allow-list by
//! [`Signed`]; the behaviour lives in [`crate::service::federation::media`].
//!
//! The content part always carries the bytes, streamed from disk: this unit never answers
//! with a `Location` redirect (it has no other place for media to live).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::Signed;
use crate::api::extract::{PathParams, QueryParams};
use crate::error::Result;
use crate::service::Server;
use crate::service::federation::media;
use crate::service::media::serve::{FileBody, content_disposition, inline_safe};
use crate::service::media::{Media, ThumbnailRequest};
use crate::util::random_string;

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route(
            "/_matrix/federation/v1/media/download/{media_id}",
            get(download),
        )
        .route(
            "/_matrix/federation/v1/media/thumbnail/{media_id}",
            get(thumbnail),
        )
}

/// # `GET /_matrix/federation/v1/media/download/{mediaId}`
///
/// `timeout_ms` is accepted and not waited on: media still being uploaded is answered at once
/// with 504 `M_NOT_YET_UPLOADED`, which the spec allows, and the peer retries.
async fn download(
    State(server): State<Arc<Server>>,
    PathParams(media_id): PathParams<String>,
    signed: Signed,
) -> Result<Response> {
    let found = media::download(&server, &signed.origin, &media_id).await?;
    let disposition =
        content_disposition(inline_safe(&found.content_type), found.filename.as_deref());
    Ok(multipart(found, disposition))
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    width: Option<u32>,
    height: Option<u32>,
    method: Option<String>,
}

/// # `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
///
/// `animated` is accepted and ignored (thumbnails are still images, as for clients).
async fn thumbnail(
    State(server): State<Arc<Server>>,
    PathParams(media_id): PathParams<String>,
    QueryParams(query): QueryParams<ThumbnailQuery>,
    signed: Signed,
) -> Result<Response> {
    let request = ThumbnailRequest::from_query(query.width, query.height, query.method.as_deref())?;
    let found = media::thumbnail(&server, &signed.origin, &media_id, request).await?;
    let name = if found.content_type == "image/jpeg" {
        "thumbnail.jpg"
    } else {
        "thumbnail.png"
    };
    Ok(multipart(found, content_disposition(true, Some(name))))
}

/// The spec's two-part answer around a stored file: the file is streamed between a head
/// (boundary, metadata part, content part headers) and a tail (closing boundary).
fn multipart(found: Media, disposition: HeaderValue) -> Response {
    // 32 random alphanumerics: cannot occur by chance in the content. Alphanumeric only, so
    // it needs no quoting in the header.
    let boundary = random_string(32);
    let content_type = HeaderValue::from_str(&found.content_type)
        .ok()
        .and_then(|value| value.to_str().ok().map(str::to_owned))
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let disposition = disposition.to_str().unwrap_or("attachment").to_owned();
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n\
         --{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {disposition}\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = head.len() as u64 + found.size + tail.len() as u64;
    let body = FileBody::framed(Bytes::from(head), found.file, found.size, Bytes::from(tail));
    let mut response = Response::new(Body::new(body));
    let headers = response.headers_mut();
    let multipart_type = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}"))
        .unwrap_or(HeaderValue::from_static("multipart/mixed"));
    headers.insert(header::CONTENT_TYPE, multipart_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}
