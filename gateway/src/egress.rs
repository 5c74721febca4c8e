//! Step 8 of the pipeline, on the way out: an upstream answer (shared by every tenant) cut down to
//! the caller — only its projects in a project list, `sign_key` nulled without `projects:secrets`.
//! Project answers are pre-rendered per project in the cache entry, so this only joins bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::auth::Principal;
use crate::cache::{Entry, ProjectItem, View};
use crate::error::GatewayError;
use crate::policy::{Ownership, Scope};

/// The body to send this principal, for an answer of an operation with this ownership rule.
pub fn render(principal: &Principal, ownership: Ownership, entry: &Entry) -> Result<Bytes, GatewayError> {
    let View::Projects { field, items } = &entry.view else {
        return Ok(entry.body.clone());
    };
    let secrets = principal.has(Scope::ProjectsSecrets);
    if principal.is_admin() && secrets {
        return Ok(entry.body.clone());
    }
    let visible: Vec<&ProjectItem> = match ownership {
        // Lists and lookups show the caller's projects only.
        Ownership::FilterProjects | Ownership::ResultProject => {
            items.iter().filter(|item| principal.owns(&item.id, &item.name)).collect()
        }
        // Writes were checked before they were sent.
        _ => items.iter().collect(),
    };
    if ownership == Ownership::ResultProject && visible.is_empty() {
        return Err(GatewayError::not_found("project not found"));
    }
    Ok(join(field, &visible, secrets))
}

/// `{"<field>":[...]}` from pre-rendered projects.
pub fn join(field: &str, items: &[&ProjectItem], secrets: bool) -> Bytes {
    let size: usize = items.iter().map(|item| item.full.len() + 1).sum::<usize>() + field.len() + 8;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(b"{\"");
    out.put_slice(field.as_bytes());
    out.put_slice(b"\":[");
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.put_u8(b',');
        }
        out.put_slice(if secrets { &item.full } else { &item.redacted });
    }
    out.put_slice(b"]}");
    out.freeze()
}
