//! The console's write actions: create a topic (`POST /api/topics`, JSON `{"name", "partitions"}`)
//! and delete one (`DELETE /api/topics/{name}`). Refused while authentication is off (read-only:
//! there is no token to present), without the `X-Quiver-Console: 1` header (cross-site forms cannot
//! send it), and by the ACLs exactly as the same admin request over QUIC would be (`calls`). Each
//! is logged to `quiver::audit` like an admin request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use quiver_proto::messages::{AdminRequest, AdminResponse};
use serde::Deserialize;

use super::access::Viewer;
use super::error::ConsoleError;
use super::origin;
use crate::auth::Request;
use crate::error::BrokerError;
use crate::http::Shared;

/// The header a console action must carry.
pub const ACTION_HEADER: &str = "x-quiver-console";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    /// 0 or absent: the broker's default.
    #[serde(default)]
    partitions: u32,
}

/// `POST /api/topics`.
pub async fn create_topic(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = async {
        allowed(&v, &headers)?;
        let new: NewTopic = serde_json::from_slice(&body).map_err(|e| {
            ConsoleError::BadRequest(format!("expected {{\"name\", \"partitions\"}}: {e}"))
        })?;
        let req = AdminRequest::CreateTopic {
            name: new.name,
            partitions: new.partitions,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
            replication_factor: None,
            min_insync: None,
        };
        run(&s, &v, "CreateTopic", req).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /api/topics/{name}`.
pub async fn delete_topic(
    State(s): State<Shared>,
    Extension(v): Extension<Viewer>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let answer = async {
        allowed(&v, &headers)?;
        run(&s, &v, "DeleteTopic", AdminRequest::DeleteTopic { name }).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// The checks before the ACLs: authentication on, sent by a page of this listener (a third line
/// against forgery, behind SameSite and the header), the anti-forgery header present.
fn allowed(v: &Viewer, headers: &HeaderMap) -> Result<(), ConsoleError> {
    if !v.authenticated {
        return Err(ConsoleError::ReadOnly);
    }
    if !origin::same_origin(headers) {
        return Err(ConsoleError::CrossSite);
    }
    match headers.get(ACTION_HEADER).map(|h| h.as_bytes()) {
        Some(b"1") => Ok(()),
        _ => Err(ConsoleError::MissingHeader),
    }
}

/// Authorizes and runs `req` as the QUIC admin stream does (replicated on a cluster node),
/// audits it, and answers the service's answer.
async fn run(
    s: &Shared,
    v: &Viewer,
    operation: &str,
    req: AdminRequest,
) -> Result<Response, ConsoleError> {
    let answer: Result<AdminResponse, BrokerError> = async {
        s.broker.authorize(&v.principal, Request::Admin(&req))?;
        let principal = Arc::new(v.principal.clone());
        let mut answer = s
            .broker
            .admin_request(&principal, req, Bytes::new())
            .await?;
        s.broker.auth().filter_admin(&v.principal, &mut answer);
        Ok(answer)
    }
    .await;
    let result = match &answer {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("{}: {e}", e.code()),
    };
    tracing::info!(target: "quiver::audit", principal = %v.principal, operation, result, via = "console", "admin request");
    let body = serde_json::to_vec(&answer?).map_err(|e| BrokerError::Internal(e.to_string()))?;
    let kind = [(axum::http::header::CONTENT_TYPE, "application/json")];
    Ok((StatusCode::OK, kind, body).into_response())
}
