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

use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use hyper::body::{Frame, SizeHint};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{Auth, PathParams, QueryParams};
use crate::error::{Error, ErrorCode, Result};
use crate::service::Server;
use crate::service::media::{self, Media, Method, ThumbnailRequest, UploadMeta};

/// The policy the spec recommends for served content: nothing in it may run or load anything.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

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
) -> Result<Json<Value>> {
    let meta = upload_meta(&headers, query)?;
    let uri = media::upload(&server, &auth.user_id, meta, body).await?;
    Ok(Json(json!({ "content_uri": uri })))
}

/// # `POST /_matrix/media/v1/create`
async fn create(State(server): State<Arc<Server>>, auth: Auth) -> Result<Json<Value>> {
    let (uri, expires) = media::create(&server, &auth.user_id).await?;
    Ok(Json(
        json!({ "content_uri": uri, "unused_expires_at": expires }),
    ))
}

/// # `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
async fn upload_to(
    State(server): State<Arc<Server>>,
    auth: Auth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<UploadQuery>,
    body: Body,
) -> Result<Json<Value>> {
    let meta = upload_meta(&headers, query)?;
    media::upload_pending(&server, &auth.user_id, &server_name, &media_id, meta, body).await?;
    Ok(Json(json!({})))
}

/// # `GET /_matrix/client/v1/media/config`
/// (also the deprecated `GET /_matrix/media/v3/config`)
async fn config(State(server): State<Arc<Server>>, _auth: Auth) -> Json<Value> {
    Json(json!({ "m.upload.size": server.config.media.max_upload_bytes }))
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
async fn download(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    PathParams((server_name, media_id)): PathParams<(String, String)>,
) -> Result<Response> {
    let media = media::download(&server, &server_name, &media_id).await?;
    Ok(serve_download(media, None))
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
async fn download_as(
    State(server): State<Arc<Server>>,
    _auth: Auth,
    PathParams((server_name, media_id, file_name)): PathParams<(String, String, String)>,
) -> Result<Response> {
    let media = media::download(&server, &server_name, &media_id).await?;
    Ok(serve_download(media, Some(file_name)))
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    width: Option<u32>,
    height: Option<u32>,
    method: Option<String>,
}

impl ThumbnailQuery {
    /// The request, with the spec's error codes; `method` defaults to `scale`, as in Synapse.
    /// `animated` is accepted and ignored: thumbnails are always still images, which the spec
    /// allows for every value of it.
    fn request(self) -> Result<ThumbnailRequest> {
        let missing = |name: &str| {
            Error::new(
                ErrorCode::MissingParam,
                format!("The {name} parameter is required"),
            )
        };
        let width = self.width.ok_or_else(|| missing("width"))?;
        let height = self.height.ok_or_else(|| missing("height"))?;
        if width == 0 || height == 0 {
            return Err(Error::invalid_param("width and height must be at least 1"));
        }
        let method = match self.method.as_deref() {
            None | Some("scale") => Method::Scale,
            Some("crop") => Method::Crop,
            Some(other) => {
                return Err(Error::invalid_param(format!(
                    "Unknown thumbnail method {other:?}: use crop or scale"
                )));
            }
        };
        Ok(ThumbnailRequest {
            width,
            height,
            method,
        })
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
    let media = media::thumbnail(&server, &server_name, &media_id, request).await?;
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
) -> Result<Response> {
    legacy_allowed(&server)?;
    let media = media::download(&server, &server_name, &media_id).await?;
    Ok(serve_download(media, None))
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (deprecated)
async fn legacy_download_as(
    State(server): State<Arc<Server>>,
    PathParams((server_name, media_id, file_name)): PathParams<(String, String, String)>,
) -> Result<Response> {
    legacy_allowed(&server)?;
    let media = media::download(&server, &server_name, &media_id).await?;
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
    let media = media::thumbnail(&server, &server_name, &media_id, request).await?;
    Ok(serve_thumbnail(media))
}

/// Whether the spec lists this content type as safe to render inline.
fn inline_safe(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    INLINE_TYPES.contains(&essence.as_str())
}

/// `Content-Disposition` for a download: `inline` for safe types, `attachment` otherwise,
/// with the file name (RFC 6266: quoted when plain ASCII, RFC 8187 `filename*` otherwise).
fn content_disposition(inline: bool, filename: Option<&str>) -> HeaderValue {
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

/// A response body reading a file in chunks, each read on the blocking pool. No thread is
/// held while the client is slow to take a chunk, so slow downloads cannot starve the pool.
struct FileBody {
    state: ReadState,
    remaining: u64,
}

enum ReadState {
    Idle(Option<File>),
    Reading(tokio::task::JoinHandle<(File, std::io::Result<Bytes>)>),
    Done,
}

impl FileBody {
    fn new(file: File, size: u64) -> Self {
        Self {
            state: ReadState::Idle(Some(file)),
            remaining: size,
        }
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
        loop {
            match &mut this.state {
                ReadState::Done => return Poll::Ready(None),
                ReadState::Idle(file) => {
                    let Some(mut file) = file.take().filter(|_| this.remaining > 0) else {
                        this.state = ReadState::Done;
                        return Poll::Ready(None);
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
                            Poll::Ready(Some(Err(err)))
                        }
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && !matches!(self.state, ReadState::Reading(_))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
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
