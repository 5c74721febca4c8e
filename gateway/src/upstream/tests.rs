//! The upstream's mapping of answers, and failover between its domains.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;

use super::domains::SUSPECT_FOR;
use super::*;
use crate::answer::AGORA_REQUEST_ID;

fn upstream() -> Arc<Upstream> {
    let config: UpstreamConfig = toml::from_str(
        r#"base_url = "http://127.0.0.1:9/dev"
           customer_id = "id"
           customer_secret = "secret""#,
    )
    .unwrap();
    Upstream::new(&config.domains(), "id", "secret", &config, Arc::new(Metrics::new())).unwrap()
}

fn raw(status: u16, body: &str, headers: &[(&'static str, &str)]) -> RawAnswer {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    RawAnswer {
        status: StatusCode::from_u16(status).unwrap(),
        headers: map,
        body: body.to_string().into(),
        truncated: false,
    }
}

fn two_domains(extra: &str) -> Arc<Upstream> {
    let mut config: UpstreamConfig = toml::from_str(&format!(
        "base_urls = [\"http://127.0.0.1:9/dev\", \"http://127.0.0.1:11/dev\"]\n\
         customer_id = \"id\"\ncustomer_secret = \"secret\"\n{extra}"
    ))
    .unwrap();
    if let Some(proxy) = config.proxy.as_mut() {
        proxy.resolve(std::path::Path::new("."), "upstream.proxy").unwrap();
    }
    Upstream::new(&config.domains(), "id", "secret", &config, Arc::new(Metrics::new())).unwrap()
}

#[tokio::test]
async fn an_unreachable_domain_waits_for_the_probe_unless_a_proxy_stands_between() {
    let out_for = |upstream: &Upstream| {
        let until = lock(&upstream.domains[0].down_until).expect("out");
        until.saturating_duration_since(Instant::now())
    };
    let direct = two_domains("");
    direct.mark_down(0, true, "cannot connect");
    assert!(out_for(&direct) > SUSPECT_FOR, "out until the probe connects");
    assert_eq!(direct.pick(), 1, "the next domain takes the calls");
    assert!(direct.unreachable().is_none(), "reachable while one domain is");
    direct.mark_down(1, true, "cannot connect");
    assert!(direct.unreachable().is_some(), "unreachable when none can be connected to");

    let proxied = two_domains("proxy = \"http://127.0.0.1:3128\"");
    proxied.mark_down(0, true, "cannot connect");
    assert!(out_for(&proxied) <= SUSPECT_FOR, "through a proxy, tried again like a timeout");
    assert_eq!(proxied.pick(), 1);
    proxied.mark_down(1, true, "cannot connect");
    assert!(proxied.unreachable().is_some());
    *lock(&proxied.domains[0].down_until) = Some(Instant::now());
    assert!(proxied.unreachable().is_none(), "reachable again once a domain is due to be tried");
}

/// The generated client's verdict on a body it could not decode.
fn undecodable() -> ClientError<types::ErrorBody> {
    let error = serde_json::from_str::<types::ErrorBody>("<html>").unwrap_err();
    ClientError::InvalidResponsePayload(Bytes::new(), error)
}

#[test]
fn any_2xx_passes_as_it_came_even_when_it_does_not_match_the_spec() {
    let upstream = upstream();
    let headers = [("content-type", "application/json; charset=utf-8"), ("x-request-id", "r1"), ("server", "kong")];
    let answer =
        upstream.outcome("list_channels", Err(undecodable()), Some(raw(202, "{\"weird\":1}", &headers))).unwrap();
    assert_eq!((answer.status.as_u16(), &answer.body[..]), (202, &b"{\"weird\":1}"[..]));
    assert_eq!(answer.headers[AGORA_REQUEST_ID], "r1", "Agora's request id, under its own name");
    assert!(answer.headers.get("server").is_none(), "only the headers a caller needs");
    assert!(upstream.outcome("list_projects", Ok(()), Some(raw(201, "{}", &[]))).is_ok());
}

#[test]
fn errors_pass_byte_for_byte_except_the_gateways_own_credentials() {
    let upstream = upstream();
    let limited =
        raw(429, "{\"message\":\"API rate limit exceeded\"}", &[("retry-after", "2"), ("ratelimit-remaining", "0")]);
    match upstream.outcome("list_channels", Err(undecodable()), Some(limited)) {
        Err(GatewayError::Upstream(status)) => {
            assert_eq!((status.status.as_u16(), status.retry_after()), (429, Some(Duration::from_secs(2))));
            assert_eq!(&status.body[..], b"{\"message\":\"API rate limit exceeded\"}");
            assert_eq!(status.headers["ratelimit-remaining"], "0");
        }
        other => panic!("{other:?}"),
    }
    assert!(upstream.credentials_refused().is_none());
    let refused = raw(401, "{\"message\":\"Invalid authentication credentials\"}", &[]);
    match upstream.outcome("list_projects", Err(undecodable()), Some(refused)) {
        Err(GatewayError::UpstreamCredentials { status: 401, detail }) => {
            assert!(detail.contains("Invalid authentication credentials"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(upstream.credentials_refused().is_some_and(|why| why.contains("credentials")), "readyz says so");
    upstream.outcome("list_projects", Ok(()), Some(raw(200, "{}", &[]))).unwrap();
    assert!(upstream.credentials_refused().is_none(), "until Agora accepts them again");
}

#[test]
fn an_answer_too_large_or_no_answer_is_a_bad_gateway() {
    let upstream = upstream();
    let mut huge = raw(200, "{", &[]);
    huge.truncated = true;
    assert!(matches!(upstream.outcome("list_projects", Ok(()), Some(huge)), Err(GatewayError::BadGateway(_))));
    let refused = ClientError::InvalidRequest("a bug".into());
    assert!(matches!(upstream.outcome("list_projects", Err(refused), None), Err(GatewayError::Internal(_))));
}
