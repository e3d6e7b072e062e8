//! The optional plain-HTTP trust-distribution listener (`listen.ca_http`, e.g. port 80): it
//! serves only the unit CA (`GET /ca.crt`), a short page with the CA's fingerprint and how to
//! install it (`GET /`), and a 308 redirect of everything else to the HTTPS public base URL.
//! No API answers on it, so nothing secret ever crosses it in clear. A user who types the
//! unit's name into a browser lands on the page, installs the CA after comparing the
//! fingerprint read aloud at the console (`appliance tls client ca`), then follows the link.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

/// What the listener serves: the CA, its fingerprint and where HTTPS is.
pub struct CaPage {
    /// The unit CA certificate (PEM).
    pub ca_pem: String,
    /// SHA-256 of the CA's DER, colon-separated uppercase hex pairs.
    pub fingerprint: String,
    /// The HTTPS public base URL, without a trailing slash.
    pub base_url: String,
}

/// The router of the trust-distribution listener.
pub fn router(page: Arc<CaPage>) -> Router {
    Router::new()
        .route("/ca.crt", get(ca_cert))
        .route("/", get(index))
        .fallback(redirect)
        .with_state(page)
}

/// # `GET /ca.crt`: the unit CA, as phones and browsers install it.
async fn ca_cert(State(page): State<Arc<CaPage>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/x-x509-ca-cert"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"outpost-unit-ca.crt\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page.ca_pem.clone(),
    )
        .into_response()
}

/// # `GET /`: the fingerprint and how to install the CA.
async fn index(State(page): State<Arc<CaPage>>) -> Html<String> {
    let base = escape(&page.base_url);
    let fingerprint = escape(&page.fingerprint);
    Html(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Outpost unit certificate</title></head><body>\n\
         <h1>Trust this unit's certificate authority</h1>\n\
         <p>This unit serves chat over HTTPS with certificates from its own certificate \
         authority. Install it once on each device:</p>\n\
         <ol><li>Download <a href=\"/ca.crt\">the unit CA (ca.crt)</a>.</li>\n\
         <li>Before you trust it, compare its SHA-256 fingerprint with the one your \
         administrator reads from the unit's console (<code>appliance tls client ca</code>):\
         <br><code>{fingerprint}</code></li>\n\
         <li>Install it as a trusted CA: on Android under Settings, Security, Encryption \
         &amp; credentials, Install a certificate, CA certificate; on iOS open the downloaded \
         profile in Settings, install it, then enable full trust under General, About, \
         Certificate Trust Settings; on a desktop, import it into the browser's or system's \
         certificate store as a trusted authority.</li>\n\
         <li>Then point your Matrix client at <a href=\"{base}\">{base}</a>.</li></ol>\n\
         </body></html>\n"
    ))
}

/// Everything else: `308` to the same path and query on the HTTPS base URL.
async fn redirect(State(page): State<Arc<CaPage>>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    match HeaderValue::try_from(format!("{}{path}", page.base_url)) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
