//! The answer the bench's floor serves (`xtask/bare-hyper`): what the gateway answered the hit,
//! written for the bare server to read.

use serde::Serialize;

/// An answer to serve: what the gateway answered, as the bench read it.
#[derive(Serialize)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// Every header but `date` (hyper's own) and `content-length` (hyper's, from the body).
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// What `response` says, body and all.
    pub(crate) async fn read(response: reqwest::Response) -> reqwest::Result<Self> {
        let headers = response
            .headers()
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "date" | "content-length"))
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect();
        let status = response.status().as_u16();
        Ok(Self { status, headers, body: response.bytes().await?.to_vec() })
    }
}
