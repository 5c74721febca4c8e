//! Token verification, case by case, asserting the reason each bad token is refused — and that
//! no reason echoes the token or names a key.

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use std::future::Future;

use super::*;
use base64::Engine as _;

use super::token::lives_too_long;
use crate::metrics::Metrics;
use crate::policy::Scope;

const SECRET: &str = "acme-unit-hs256-secret-0123456789abcdef";
const OTHER_SECRET: &str = "another-unit-hs256-secret-0123456789abc";

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/keys").join(name).display().to_string()
}

fn authenticator() -> Authenticator {
    let config = format!(
        r#"
        [upstream]
        base_url = "sandbox"
        [[tenants]]
        id = "acme"
        issuer = "https://auth.acme.test"
        audience = "agora-gateway"
        scopes = ["projects:read", "channels:read"]
        project_name_prefix = "acme-"
        keys = [
          {{ kid = "hs", alg = "HS256", secret = "{SECRET}" }},
          {{ kid = "rsa", alg = "RS256", public_key = "file:{}" }},
        ]
        [[tenants]]
        id = "solo"
        issuer = "https://auth.solo.test"
        audience = "agora-gateway"
        scopes = ["projects:read"]
        keys = [{{ kid = "only", alg = "HS256", secret = "{OTHER_SECRET}" }}]
        "#,
        fixture("acme-rsa.pub.pem")
    );
    let config = Config::parse(&config, Path::new(".")).unwrap();
    Authenticator::new(&config, Arc::new(Metrics::new())).unwrap()
}

fn now() -> u64 {
    unix_now()
}

fn claims() -> Value {
    json!({"iss": "https://auth.acme.test", "aud": "agora-gateway", "sub": "svc", "exp": now() + 600,
           "scope": "projects:read admin"})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

fn segment(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Runs `future` to its end (the authenticator's futures, on a runtime of their own).
fn block<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

fn refusal(auth: &Authenticator, header: Option<&str>) -> String {
    let value = header.map(|h| HeaderValue::from_str(h).unwrap());
    match block(auth.authenticate(value.as_ref())) {
        Err(GatewayError::Unauthorized(reason)) => reason,
        Err(other) => panic!("expected a 401, got {other:?}"),
        Ok(_) => panic!("{header:?} was accepted"),
    }
}

#[test]
fn every_bad_token_is_refused_for_its_own_reason() {
    let auth = authenticator();
    let good = |claims: &Value| sign(Algorithm::HS256, Some("hs"), claims, &hs(SECRET));
    let other_rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("acme-rsa-2.pem")).unwrap()).unwrap();
    let none = format!("{}.{}.", segment(&json!({"alg": "none", "kid": "hs"})), segment(&claims()));
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no header", None, "missing Authorization header"),
        ("Basic", Some("Basic YWNtZTpzZWNyZXQ=".into()), "scheme must be Bearer"),
        ("not a JWT", Some("Bearer not-a-jwt".into()), "not a JWT"),
        ("alg none", Some(format!("Bearer {none}")), "alg none"),
        ("header not JSON", Some("Bearer a.b.c".into()), "header is not base64url-encoded JSON"),
        (
            "payload not JSON",
            Some(format!("Bearer {}.e30x.sig", segment(&json!({"alg": "HS256", "kid": "hs"})))),
            "payload is not base64url-encoded JSON",
        ),
        (
            "unknown issuer",
            Some(format!("Bearer {}", good(&with(claims(), "iss", json!("https://evil"))))),
            "issuer is not a configured tenant",
        ),
        ("iss not a string", Some(format!("Bearer {}", good(&with(claims(), "iss", json!(7))))), "iss is not a string"),
        ("no iss", Some(format!("Bearer {}", good(&without(claims(), "iss")))), "lacks the required claim iss"),
        (
            "unknown kid",
            Some(format!("Bearer {}", sign(Algorithm::HS256, Some("nope"), &claims(), &hs(SECRET)))),
            "kid names no key",
        ),
        (
            "no kid, several keys",
            Some(format!("Bearer {}", sign(Algorithm::HS256, None, &claims(), &hs(SECRET)))),
            "has no kid, and its tenant has several keys",
        ),
        (
            "HS512 against an HS256 key",
            Some(format!("Bearer {}", sign(Algorithm::HS512, Some("hs"), &claims(), &hs(SECRET)))),
            "signed with HS512, which its key does not accept",
        ),
        (
            "HS256 with the RSA key's kid (key confusion)",
            Some(format!("Bearer {}", sign(Algorithm::HS256, Some("rsa"), &claims(), &hs(SECRET)))),
            "which its key does not accept",
        ),
        (
            "signed with another secret",
            Some(format!("Bearer {}", sign(Algorithm::HS256, Some("hs"), &claims(), &hs(OTHER_SECRET)))),
            "signature does not verify",
        ),
        (
            "signed with another RSA key",
            Some(format!("Bearer {}", sign(Algorithm::RS256, Some("rsa"), &claims(), &other_rsa))),
            "signature does not verify",
        ),
        ("expired", Some(format!("Bearer {}", good(&with(claims(), "exp", json!(now() - 120))))), "has expired"),
        (
            "not yet valid",
            Some(format!("Bearer {}", good(&with(claims(), "nbf", json!(now() + 120))))),
            "not valid yet",
        ),
        (
            "wrong audience",
            Some(format!("Bearer {}", good(&with(claims(), "aud", json!("else"))))),
            "aud is not the audience",
        ),
        ("no exp", Some(format!("Bearer {}", good(&without(claims(), "exp")))), "sub and exp are required"),
        ("no sub", Some(format!("Bearer {}", good(&without(claims(), "sub")))), "sub and exp are required"),
        ("empty sub", Some(format!("Bearer {}", good(&with(claims(), "sub", json!(""))))), "sub is empty"),
        (
            "a 100-year token",
            Some(format!("Bearer {}", good(&with(claims(), "exp", json!(now() + 100 * 365 * 86_400))))),
            "lives longer than this gateway accepts",
        ),
        (
            "exp 2^62, no iat",
            Some(format!("Bearer {}", good(&with(claims(), "exp", json!(1u64 << 62))))),
            "lives longer than this gateway accepts",
        ),
        (
            "issued 30 days before it expires",
            Some(format!("Bearer {}", good(&with(claims(), "iat", json!(now() - 29 * 86_400))))),
            "lives longer than this gateway accepts",
        ),
    ];
    for (case, header, reason) in cases {
        let refused = refusal(&auth, header.as_deref());
        assert!(refused.contains(reason), "{case}: {refused:?} does not say {reason:?}");
        if let Some(token) = header.as_deref().and_then(|h| h.split_once(' ')).map(|(_, t)| t).filter(|t| t.len() > 20)
        {
            assert!(!refused.contains(token), "{case}: the reason echoes the token");
        }
        for secret_detail in ["\"hs\"", "\"rsa\"", "RS256", SECRET] {
            assert!(!refused.contains(secret_detail), "{case}: {refused:?} names a key ({secret_detail})");
        }
    }
}

#[test]
fn a_good_token_gives_its_tenant_subject_and_scopes_cut_down() {
    let auth = authenticator();
    let token = sign(Algorithm::HS256, Some("hs"), &claims(), &hs(SECRET));
    let principal =
        block(auth.authenticate(Some(&HeaderValue::from_str(&format!("Bearer {token}")).unwrap()))).unwrap();
    assert_eq!((principal.tenant.id.as_str(), principal.subject.as_str()), ("acme", "svc"));
    assert!(principal.has(Scope::ProjectsRead));
    assert!(!principal.is_admin(), "admin is asked for but not the tenant's");
    // A tenant with one key accepts a token without kid; within the leeway, an expired one too.
    let solo = json!({"iss": "https://auth.solo.test", "aud": "agora-gateway", "sub": "s", "exp": now() - 10});
    let token = sign(Algorithm::HS256, None, &solo, &hs(OTHER_SECRET));
    assert!(block(auth.authenticate(Some(&HeaderValue::from_str(&format!("bearer {token}")).unwrap()))).is_ok());
}

#[test]
fn token_lifetimes_count_from_issue_and_from_now() {
    let week = Duration::from_secs(7 * 86_400);
    let now = 1_000_000_000;
    assert!(!lives_too_long(now + 3600, None, now, week));
    assert!(!lives_too_long(now + 3600, Some(now - 3600), now, week));
    assert!(lives_too_long(now + 8 * 86_400, None, now, week), "longer than a week from now");
    assert!(lives_too_long(now + 3600, Some(now - 8 * 86_400), now, week), "issued long before");
    assert!(!lives_too_long(now + 7 * 86_400 + 10, None, now, week), "within the leeway");
    assert!(lives_too_long(u64::MAX, Some(0), now, week));
}
