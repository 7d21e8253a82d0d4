//! The sign-in page for authentication on: the only unauthenticated page, a form that POSTs a token;
//! a token the broker accepts (with `describe` on the cluster) comes back as the session cookie
//! (HttpOnly, so page scripts never read it; SameSite=Strict, so other sites' requests do not carry
//! it). Signing out clears it. A refusal says nothing about why.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::access::{self, COOKIE};
use super::assets;
use super::origin;
use crate::http::Shared;

pub async fn page() -> Response {
    assets::html(StatusCode::OK, assets::LOGIN_HTML)
}

/// `POST /login` with the form field `token`. Only from this listener's own sign-in page: another
/// site's form could otherwise sign the browser in as the attacker (login CSRF), whose view and
/// whose name on any action the victim would then get.
pub async fn sign_in(
    State(s): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !origin::same_origin(&headers) {
        return cross_site();
    }
    if !s.broker.auth().enabled() {
        // Nothing to sign in to: the console is open and read-only, no cookie is set.
        return see_other("/");
    }
    let token = form_token(&body);
    let viewer = match token.as_deref().filter(|t| cookie_safe(t)) {
        Some(t) => access::sign_in(s.broker.auth(), remote, t).await,
        None => None,
    };
    match (viewer, token) {
        (Some(_), Some(t)) => signed_in(&t),
        _ => assets::html(StatusCode::UNAUTHORIZED, assets::LOGIN_FAILED_HTML),
    }
}

/// Back to the console with the cookie set (303: the browser follows with a GET).
fn signed_in(token: &str) -> Response {
    let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    match HeaderValue::from_str(&cookie) {
        Ok(v) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, v),
                (header::LOCATION, HeaderValue::from_static("/")),
            ],
        )
            .into_response(),
        Err(_) => assets::html(StatusCode::UNAUTHORIZED, assets::LOGIN_FAILED_HTML),
    }
}

/// `POST /logout`: clears the cookie and shows the sign-in page again; from this listener's pages
/// only, so another site cannot sign the viewer out behind their back.
pub async fn sign_out(headers: HeaderMap) -> Response {
    if !origin::same_origin(&headers) {
        return cross_site();
    }
    let clear = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    let clear = HeaderValue::from_str(&clear).unwrap_or(HeaderValue::from_static(""));
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, clear),
            (header::LOCATION, HeaderValue::from_static("/login")),
        ],
    )
        .into_response()
}

/// A redirect to `to`, followed with a GET.
fn see_other(to: &'static str) -> Response {
    let location = [(header::LOCATION, HeaderValue::from_static(to))];
    (StatusCode::SEE_OTHER, location).into_response()
}

/// The answer to a sign-in or sign-out another site's page sent.
fn cross_site() -> Response {
    let text = "403 forbidden: sign in and out from this broker's own page (/login)\n";
    (StatusCode::FORBIDDEN, text).into_response()
}

/// The `token` field of an `application/x-www-form-urlencoded` body.
fn form_token(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_owned())
}

/// A token goes into a cookie only when it cannot break the header: tokens are `qvt_<hex>_<hex>`,
/// anything else would not authenticate anyway.
fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_field_is_decoded_and_checked() {
        assert_eq!(form_token(b"token=qvt_ab_cd").as_deref(), Some("qvt_ab_cd"));
        assert_eq!(form_token(b"x=1&token=%20a%3Bb").as_deref(), Some("a;b"));
        assert!(!cookie_safe("a;b"));
        assert!(!cookie_safe(""));
        assert_eq!(form_token(b"\xff\xfe"), None);
    }
}
