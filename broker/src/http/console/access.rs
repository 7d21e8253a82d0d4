//! Who is looking at the HTTP listener, and the guard in front of it. With authentication off
//! every request is the anonymous viewer and may read (the console is then read-only: there is no
//! token to present). With it on, a request presents a token — `Authorization: Bearer` (Prometheus,
//! probes, scripts) or the console's session cookie (browsers, see `login`) — that the broker's own
//! [`crate::auth::Auth::authenticate`] checks (per-address back-off and the audit log included),
//! and its principal needs `describe` on the cluster.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use quiver_proto::auth::{Operation, ResourceKind};

use super::origin;
use crate::auth::{Auth, Principal};
use crate::http::Shared;

/// The console's session cookie: it holds the token itself (HttpOnly, SameSite=Strict), so the
/// broker keeps no session state and revoking the user ends the session.
pub const COOKIE: &str = "quiver_session";

/// The one answer to a missing or refused token: it does not say which it was.
const UNAUTHORIZED: &str = "401 unauthorized: this listener needs a token with describe on the \
                            cluster (Authorization: Bearer TOKEN, or sign in at /login)\n";

/// The answer to a console request made under a name other sites could rebind to this listener.
const NOT_LOCAL: &str = "403 forbidden: with authentication off the console answers only at an IP \
                         address or localhost (http://127.0.0.1:PORT/); turn authentication on to \
                         serve it under a name\n";

/// Who made a request, as the guard found out.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub principal: Principal,
    /// Authentication is on (the principal proved who it is).
    pub authenticated: bool,
    /// The console offers write actions: the principal has `admin` on the cluster. The API still
    /// checks each action through the request table, whatever this says.
    pub admin: bool,
}

/// The token a request presents: a bearer header wins over the session cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    bearer.or_else(|| cookie(headers, COOKIE))
}

/// One cookie's value from the `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Checks a token the way the QUIC handshake does, then `describe` on the cluster. `None` for a
/// refusal of either kind (both logged to `quiver::audit` by the checks themselves).
pub async fn sign_in(auth: &Auth, remote: SocketAddr, token: &str) -> Option<Viewer> {
    // With authentication off `authenticate` and `allows` pass everyone: a token proves nothing,
    // and an `authenticated` admin viewer made of one would unlock the write actions.
    if !auth.enabled() {
        return None;
    }
    let principal = auth
        .authenticate(remote.ip(), Some(token), None)
        .await
        .ok()?;
    auth.check(&principal, ResourceKind::Cluster, "*", Operation::Describe)
        .ok()?;
    let admin = auth.allows(&principal, ResourceKind::Cluster, "*", Operation::Admin);
    Some(Viewer {
        principal,
        authenticated: true,
        admin,
    })
}

/// The guard of every path but the sign-in page and the assets: finds the [`Viewer`] and hands it
/// to the handler, or answers 401.
pub async fn guard(
    State(s): State<Shared>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = s.broker.auth().clone();
    if !auth.enabled() && rebound(&request) {
        return (StatusCode::FORBIDDEN, NOT_LOCAL).into_response();
    }
    let viewer = match auth.enabled() {
        false => Some(Viewer {
            principal: Principal::anonymous(),
            authenticated: false,
            admin: false,
        }),
        true => match presented_token(request.headers()) {
            Some(token) => sign_in(&auth, remote, token).await,
            // Nothing presented is a first visit, not a guess: no back-off for it.
            None => None,
        },
    };
    match viewer {
        Some(v) => {
            request.extensions_mut().insert(v);
            next.run(request).await
        }
        None => unauthorized(wants_html(request.headers())),
    }
}

/// With authentication off, whether `request` may come from a page whose DNS name was rebound to
/// this listener: the console (`/`, `/api/…`), or anything a browser sent, addressed by a name that
/// is neither an IP address nor `localhost`. Scrapers and probes without browser headers keep
/// working under any name.
fn rebound(request: &Request) -> bool {
    let path = request.uri().path();
    let console = path == "/" || path.starts_with("/api/");
    let browser = request.headers().contains_key("sec-fetch-site")
        || request.headers().contains_key(header::ORIGIN);
    (console || browser) && !origin::local_host(request.uri(), request.headers())
}

/// A browser asking for a page gets a link to the sign-in page; anything else plain text.
fn unauthorized(html: bool) -> Response {
    let challenge = [(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"quiver\""),
    )];
    if html {
        let body = super::assets::UNAUTHORIZED_HTML;
        let html = [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )];
        return (StatusCode::UNAUTHORIZED, challenge, html, body).into_response();
    }
    (StatusCode::UNAUTHORIZED, challenge, UNAUTHORIZED).into_response()
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_header_wins_over_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; quiver_session=c1"),
        );
        assert_eq!(presented_token(&h), Some("c1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t1"));
        assert_eq!(presented_token(&h), Some("t1"));
    }

    #[test]
    fn other_schemes_and_cookies_are_not_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("quiver_sessionx=1; =; junk"),
        );
        assert_eq!(presented_token(&h), None);
    }
}
