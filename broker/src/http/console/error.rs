//! How the console's API fails: a JSON body `{"error": "..."}` with the HTTP status the broker's
//! error code maps to (403 for a refused ACL, 404 for an unknown topic, 409 for one that exists,
//! 400 for the caller's mistakes, 500 for the broker's).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quiver_proto::ErrorCode;

use crate::error::BrokerError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// With authentication off there is no token to present, so no one can be trusted to write.
    #[error("the console is read-only while authentication is off (there is no token to present); use the quiver command line")]
    ReadOnly,
    /// Cross-site forms cannot set a custom header: requiring one stops request forgery.
    #[error("a console action needs the header X-Quiver-Console: 1")]
    MissingHeader,
    /// The browser says another site's page sent it.
    #[error("refused: the request came from another site")]
    CrossSite,
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::BadRequest(_) | ConsoleError::MissingHeader => StatusCode::BAD_REQUEST,
            ConsoleError::ReadOnly | ConsoleError::CrossSite => StatusCode::FORBIDDEN,
            ConsoleError::Broker(e) => status_of(e.code()),
        }
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    match code {
        C::NotAuthorized => StatusCode::FORBIDDEN,
        C::UnknownTopic | C::UnknownExchange | C::UnknownPlugin | C::UnknownPartition => {
            StatusCode::NOT_FOUND
        }
        C::TopicExists | C::ExchangeExists => StatusCode::CONFLICT,
        C::ServerBusy | C::ShuttingDown | C::TopicUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        C::InvalidRequest | C::InvalidTopicName | C::InvalidConfig => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let json = [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        (self.status(), json, body).into_response()
    }
}
