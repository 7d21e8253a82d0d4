//! The console's files, embedded in the binary at build time (`include_str!` from `assets/`): the
//! page, its script and style sheet, the sign-in page. Nothing is fetched from elsewhere, so the
//! console works without internet access; the Content-Security-Policy says so to the browser too.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
pub const LOGIN_HTML: &str = include_str!("assets/login.html");
pub const LOGIN_FAILED_HTML: &str = include_str!("assets/login-failed.html");
pub const UNAUTHORIZED_HTML: &str = include_str!("assets/unauthorized.html");

/// Only this origin's scripts, styles and requests; no inline script, no framing.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// An HTML page with the console's Content-Security-Policy.
pub fn html(status: StatusCode, body: &'static str) -> Response {
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
    ];
    (status, headers, body).into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    html(StatusCode::OK, INDEX_HTML)
}

/// `GET /assets/{file}`: the script and the style sheet (public: they hold no data).
pub async fn asset(Path(file): Path<String>) -> Response {
    let (kind, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}
