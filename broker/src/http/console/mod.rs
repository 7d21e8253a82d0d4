//! The web console: a single page (`/`, plain JavaScript and CSS embedded in the binary) that polls
//! a JSON API under `/api/` every second, the sign-in page for authentication on, and the routes
//! tying them to the listener. One idea per module: [`access`] (who is looking, the guard of the
//! whole listener), [`login`] (the session cookie), [`api`] (bounded reads), [`actions`] (topic
//! create and delete), [`origin`] (cross-site and DNS-rebinding checks), [`assets`] (the embedded
//! files), [`error`] (how failures answer).

pub mod access;
mod actions;
mod api;
mod assets;
mod calls;
mod error;
mod login;
mod origin;
mod page;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::routing::{delete, get, post};
use axum::Router;

use super::Shared;

/// The largest request body the listener reads (a sign-in form, a topic to create).
const MAX_BODY: usize = 16 * 1024;

/// The console's routes around `probes` (the metrics and health routes): everything but the
/// sign-in page and the static assets goes through [`access::guard`].
pub fn routes(probes: Router<Shared>, shared: Shared) -> Router<Shared> {
    let guarded = probes
        .route("/", get(assets::index))
        .route("/api/session", get(api::session))
        .route("/api/topics", get(api::topics).post(actions::create_topic))
        .route("/api/topics/{name}", delete(actions::delete_topic))
        .route("/api/groups", get(api::groups))
        .route("/api/plugins", get(api::plugins))
        .route("/api/exchanges", get(api::exchanges))
        .route_layer(middleware::from_fn_with_state(shared, access::guard));
    guarded
        .route("/login", get(login::page).post(login::sign_in))
        .route("/logout", post(login::sign_out))
        .route("/assets/{file}", get(assets::asset))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::map_response(hardened))
}

/// Headers on every answer: nothing is sniffed, framed by another site or cached (answers carry
/// live state and, signed in, a principal's view). The Content-Security-Policy goes on every answer
/// too, not only the pages: the 401 page, a JSON or text body opened in a tab, an error page of
/// the framework — none may run script or load anything but this origin's files.
async fn hardened(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(assets::CSP));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
