//! The page for people at `/`: paste a query and one or two responses (or start from an
//! example of a scenario), stream the critique over the SSE endpoint with `fetch`, and read
//! the verdict, its probabilities and the usage. Plain HTML, CSS and JavaScript embedded in
//! the binary: no build step, nothing fetched from elsewhere (the Content-Security-Policy
//! allows this origin only). The API key typed into it lives in the page's memory only.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page.
const INDEX_HTML: &str = include_str!("page/index.html");
/// Its script.
const APP_JS: &str = include_str!("page/app.js");
/// Its style sheet.
const STYLE_CSS: &str = include_str!("page/style.css");

/// Scripts, styles and calls from this origin only; no framing by other sites.
const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `/`, `/page/app.js` and `/page/style.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/page/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/page/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

/// A static file with its type and the page's security headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
