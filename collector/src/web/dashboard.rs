//! The operators' dashboard: a page, its script and style, and the vendored Leaflet
//! (`assets/leaflet`), all served from the binary (no CDN, no build step, works offline).
//! The page reads the same JSON API as everyone else.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::web::AppState;

/// One file served from the binary: its type, how long it may be cached, its bytes.
fn asset(
    content_type: &'static str,
    cache: &'static str,
    body: &'static str,
) -> impl IntoResponse + Clone {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
}

/// The page and what it loads. Its own files are revalidated on every load (a new
/// collector may bring a new page); Leaflet is cached for a day.
pub fn routes() -> Router<AppState> {
    const OWN: &str = "no-cache";
    const LIB: &str = "public, max-age=86400";
    let page = asset(
        "text/html; charset=utf-8",
        OWN,
        include_str!("dashboard.html"),
    );
    let js = asset(
        "text/javascript; charset=utf-8",
        OWN,
        include_str!("dashboard.js"),
    );
    let css = asset(
        "text/css; charset=utf-8",
        OWN,
        include_str!("dashboard.css"),
    );
    let leaflet_js = asset(
        "text/javascript; charset=utf-8",
        LIB,
        include_str!("assets/leaflet/leaflet.js"),
    );
    let leaflet_css = asset(
        "text/css; charset=utf-8",
        LIB,
        include_str!("assets/leaflet/leaflet.css"),
    );
    Router::new()
        .route("/", get(move || async move { page }))
        .route("/dashboard.js", get(move || async move { js }))
        .route("/dashboard.css", get(move || async move { css }))
        .route("/assets/leaflet.js", get(move || async move { leaflet_js }))
        .route(
            "/assets/leaflet.css",
            get(move || async move { leaflet_css }),
        )
}
