//! Media: the content repository's routes.
//!
//! Uploads stay at `/_matrix/media/v3/upload` and `/_matrix/media/v1/create` (the spec has not
//! moved them); reads are the authenticated `/_matrix/client/v1/media/*` routes. The deprecated
//! unauthenticated `/_matrix/media/v3/download` and `/thumbnail` are frozen as the spec asks
//! (`M_NOT_FOUND` for every item) unless `[media] legacy_unauthenticated_downloads` is set.
//! URL previews are not offered: a unit on an isolated network fetches no web pages, so
//! `preview_url` answers 404 `M_UNRECOGNIZED`, what Synapse answers with previews disabled and
//! what clients take as "not supported" rather than as a per-URL failure worth retrying.
//!
//! Downloads are streamed from disk in chunks read on the blocking pool, never loaded whole,
//! with the spec's security headers: a restrictive `Content-Security-Policy`,
//! `Cross-Origin-Resource-Policy: cross-origin`, and `Content-Disposition: inline` only for
//! the content types the spec lists as safe to render.
//!
//! Reads of another unit's media (`serverName` an allow-listed peer) are fetched once over
//! federation and then served from this unit's cache (`service::media`); `timeout_ms` bounds
//! the wait for the peer, and `allow_remote=false` (a parameter of the deprecated routes, also
//! accepted on the new ones) keeps a read local.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;

use crate::api::client::wire::{ContentUri, CreatedMedia, Empty, MediaConfig};
use crate::api::extract::{Auth, PathParams, QueryParams};
use crate::error::{Error, ErrorCode, Result};
use crate::service::Server;
use crate::service::media::serve::{FileBody, content_disposition, inline_safe};
use crate::service::media::{self, Media, Remote, ThumbnailRequest, UploadMeta};

/// The policy the spec recommends for served content: nothing in it may run or load anything.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// The routes of this area.
pub fn routes() -> Router<Arc<Server>> {
    const V1: &str = "/_matrix/client/v1/media";
    const LEGACY: &str = "/_matrix/media/v3";
    Router::new()
        .route(&format!("{LEGACY}/upload"), post(upload))
        .route(
            &format!("{LEGACY}/upload/{{server_name}}/{{media_id}}"),
            put(upload_to),
        )
        .route("/_matrix/media/v1/create", post(create))
        .route(&format!("{V1}/config"), get(config))
        .route(
            &format!("{V1}/download/{{server_name}}/{{media_id}}"),
            get(download),
        )
        .route(
            &format!("{V1}/download/{{server_name}}/{{media_id}}/{{file_name}}"),
            get(download_as),
        )
        .route(
            &format!("{V1}/thumbnail/{{server_name}}/{{media_id}}"),
            get(thumbnail),
        )
        .route(&format!("{V1}/preview_url"), get(preview_url))
        .route(&format!("{LEGACY}/config"), get(config))
        .route(
            &format!("{LEGACY}/download/{{server_name}}/{{media_id}}"),
            get(legacy_download),
        )
        .route(
            &format!("{LEGACY}/download/{{server_name}}/{{media_id}}/{{file_name}}"),
            get(legacy_download_as),
        )
        .route(
            &format!("{LEGACY}/thumbnail/{{server_name}}/{{media_id}}"),
            get(legacy_thumbnail),
        )
        .route(&format!("{LEGACY}/preview_url"), get(preview_url))
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

/// Reads what the uploader declared from the headers.
fn upload_meta(headers: &HeaderMap, query: UploadQuery) -> Result<UploadMeta> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Error::invalid_param("Content-Type is not a valid media type"))?
                .to_owned(),
        ),
        None => None,
    };
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    Ok(UploadMeta {
        content_type,
        filename: query.filename,
        content_length,
    })
}

/// # `POST /_matrix/media/v3/upload`
async fn upload(
    State(server): State<Arc<Server>>,
    auth: Auth,
    headers: HeaderMap,
    QueryParams(query): QueryParams<UploadQuery>,
    body: Body,
) -> Result<Json<ContentUri>> {
    let meta = upload_meta(&headers, query)?;
    let content_uri = media::upload(&server, &auth.user_id, meta, body).await?;
    Ok(Json(ContentUri { content_uri }))
}

/// # `POST /_matrix/media/v1/create`
async fn create(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<CreatedMedia>> {
    let (content_uri, unused_expires_at) = media::create(&server, &auth.user_id).await?;
    Ok(Json(CreatedMedia {
        content_uri,
        unused_expires_at,
    }))
}

/// # `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
async fn upload_to(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<UploadQuery>,
    body: Body,
) -> Result<Json<Empty>> {
    let meta = upload_meta(&headers, query)?;
    media::upload_pending(&server, &auth.user_id, &server_name, &media_id, meta, body).await?;
    Ok(Json(Empty {}))
}

/// # `GET /_matrix/client/v1/media/config`
/// (also the deprecated `GET /_matrix/media/v3/config`)
async fn config(State(server): State<Arc<Server>>, _auth: Auth) -> Json<MediaConfig> {
    Json(MediaConfig {
        upload_size: server.config.media.max_upload_bytes,
    })
}

/// The parameters every read takes: whether another unit may be asked, and how long to wait.
#[derive(Deserialize)]
struct ReadQuery {
    allow_remote: Option<bool>,
    timeout_ms: Option<u64>,
}

impl ReadQuery {
    fn remote(&self) -> Remote {
        Remote {
            allow: self.allow_remote.unwrap_or(true),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response> {
    let media = media::download(&server, &server_name, &media_id, query.remote()).await?;
    Ok(serve_download(media, None))
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
async fn download_as(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    PathParams((server_name, media_id, file_name)): PathParams<(String, String, String)>,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response> {
    let media = media::download(&server, &server_name, &media_id, query.remote()).await?;
    Ok(serve_download(media, Some(file_name)))
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    width: Option<u32>,
    height: Option<u32>,
    method: Option<String>,
    // Not `#[serde(flatten)] ReadQuery`: flattening makes serde_urlencoded hand every value
    // over as a string, and numbers then fail to parse.
    allow_remote: Option<bool>,
    timeout_ms: Option<u64>,
}

impl ThumbnailQuery {
    /// The request, with the spec's error codes (see [`ThumbnailRequest::from_query`]).
    fn request(&self) -> Result<ThumbnailRequest> {
        ThumbnailRequest::from_query(self.width, self.height, self.method.as_deref())
    }

    fn remote(&self) -> Remote {
        Remote {
            allow: self.allow_remote.unwrap_or(true),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// # `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
async fn thumbnail(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<ThumbnailQuery>,
) -> Result<Response> {
    let request = query.request()?;
    let remote = query.remote();
    let media = media::thumbnail(&server, &server_name, &media_id, request, remote).await?;
    Ok(serve_thumbnail(media))
}

/// # `GET /_matrix/client/v1/media/preview_url`
/// (also the deprecated `GET /_matrix/media/v3/preview_url`)
async fn preview_url(_auth: Auth) -> Error {
    Error::new(
        ErrorCode::Unrecognized,
        "URL previews are not available: this server does not fetch web pages",
    )
}

/// The freeze of the unauthenticated routes, unless the admin lifted it.
fn legacy_allowed(server: &Server) -> Result<()> {
    if server.config.media.legacy_unauthenticated_downloads {
        return Ok(());
    }
    Err(Error::not_found(
        "Unauthenticated media access is frozen on this server: use /_matrix/client/v1/media",
    ))
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (deprecated)
async fn legacy_download(
    State(server): State<Arc<Server>>,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response> {
    legacy_allowed(&server)?;
    let media = media::download(&server, &server_name, &media_id, query.remote()).await?;
    Ok(serve_download(media, None))
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (deprecated)
async fn legacy_download_as(
    State(server): State<Arc<Server>>,
    PathParams((server_name, media_id, file_name)): PathParams<(String, String, String)>,
    QueryParams(query): QueryParams<ReadQuery>,
) -> Result<Response> {
    legacy_allowed(&server)?;
    let media = media::download(&server, &server_name, &media_id, query.remote()).await?;
    Ok(serve_download(media, Some(file_name)))
}

/// # `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated)
async fn legacy_thumbnail(
    State(server): State<Arc<Server>>,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<ThumbnailQuery>,
) -> Result<Response> {
    legacy_allowed(&server)?;
    let request = query.request()?;
    let remote = query.remote();
    let media = media::thumbnail(&server, &server_name, &media_id, request, remote).await?;
    Ok(serve_thumbnail(media))
}

fn serve_download(media: Media, filename_override: Option<String>) -> Response {
    let filename = filename_override.or_else(|| media.filename.clone());
    let disposition = content_disposition(inline_safe(&media.content_type), filename.as_deref());
    serve(media, disposition)
}

fn serve_thumbnail(media: Media) -> Response {
    let name = if media.content_type == "image/jpeg" {
        "thumbnail.jpg"
    } else {
        "thumbnail.png"
    };
    serve(media, content_disposition(true, Some(name)))
}

/// Streams a stored file with the spec's headers.
fn serve(media: Media, disposition: HeaderValue) -> Response {
    let content_type = HeaderValue::from_str(&media.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let size = media.size;
    let mut response = Response::new(Body::new(FileBody::new(media.file, size)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The bytes behind a media ID never change.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    response
}
