//! `POST /agora/ncs/{appid}`: where Agora's Notifications service (NCS) delivers a project's
//! notices. No token: a notice is let in by its signature (`notify/`), and, for a project with
//! `allow_agora_ips`, by its address (403 otherwise; 503 while Agora's addresses are unknown). At most `MAX_NOTICE` bytes
//! (Agora's notices are a few hundred); 200 for a notice applied or seen before, 401 for a bad
//! or missing signature, 404 for an App ID with no `[[notifications]]` entry.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Inbound, read_body};
use crate::notify::Intake;
use crate::state::Gateway;

/// The largest notice read.
const MAX_NOTICE: usize = 64 * 1024;

pub(crate) async fn intake(
    State(gateway): State<Arc<Gateway>>,
    inbound: Inbound,
    Path(appid): Path<String>,
    headers: HeaderMap,
    peer: Option<axum::Extension<crate::server::Peer>>,
    body: Body,
) -> Response {
    inbound.slot.set_operation("ncs_notice");
    let body = match read_body(body, inbound.declared_length, MAX_NOTICE).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let peer = peer.map(|axum::Extension(peer)| peer.0.ip());
    match gateway.notifications.intake(&appid, &headers, &body, peer).await {
        Ok(intake) => {
            let duplicate = intake == Intake::Duplicate;
            (StatusCode::OK, axum::Json(json!({ "accepted": true, "duplicate": duplicate }))).into_response()
        }
        Err(error) => error.into_response(),
    }
}
