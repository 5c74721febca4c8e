//! Per-tenant JWT auth, scopes and tenant isolation, end to end.

use agora_console_client::types;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn hs(secret: &str) -> EncodingKey {
    EncodingKey::from_secret(secret.as_bytes())
}

fn without(mut claims: Value, claim: &str) -> Value {
    claims.as_object_mut().unwrap().remove(claim);
    claims
}

fn with(mut claims: Value, claim: &str, value: Value) -> Value {
    claims[claim] = value;
    claims
}

#[tokio::test]
async fn every_bad_token_gets_401_with_a_challenge_and_no_echo() {
    let stack = Stack::start(Options::default()).await;
    let acme = claims("acme", TENANT_SCOPES);
    let rsa_public = std::fs::read(key_file("acme-rsa.pub.pem")).unwrap();
    let other_rsa = EncodingKey::from_rsa_pem(&std::fs::read(key_file("acme-rsa-2.pem")).unwrap()).unwrap();
    let valid = token("acme", TENANT_SCOPES);
    let mut segments: Vec<&str> = valid.split('.').collect();
    let forged_payload = b64(&claims("acme", ALL_SCOPES));
    segments[1] = &forged_payload;
    let tampered = segments.join(".");
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT", "kid": "acme-hs"})), b64(&acme));

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("wrong scheme", Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("acme:secret")))),
        ("garbage", Some("Bearer this-is-not-a-jwt".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("alg none", Some(format!("Bearer {unsigned}"))),
        (
            "HS256 signed with the tenant's RSA public key",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, Some("acme-rsa"), &acme, &EncodingKey::from_secret(&rsa_public))
            )),
        ),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
        (
            "expired beyond the leeway",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    Some("acme-hs"),
                    &with(acme.clone(), "exp", json!(now() - 120)),
                    &hs(ACME_SECRET)
                )
            )),
        ),
        (
            "nbf in the future",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    Some("acme-hs"),
                    &with(acme.clone(), "nbf", json!(now() + 300)),
                    &hs(ACME_SECRET)
                )
            )),
        ),
        (
            "wrong aud",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    Some("acme-hs"),
                    &with(acme.clone(), "aud", json!("someone-else")),
                    &hs(ACME_SECRET)
                )
            )),
        ),
        (
            "unknown iss",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    Some("acme-hs"),
                    &with(acme.clone(), "iss", json!("https://auth.unknown.test")),
                    &hs(ACME_SECRET)
                )
            )),
        ),
        ("unknown kid", Some(format!("Bearer {}", sign(Algorithm::HS256, Some("acme-nope"), &acme, &hs(ACME_SECRET))))),
        (
            "missing exp",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, Some("acme-hs"), &without(acme.clone(), "exp"), &hs(ACME_SECRET))
            )),
        ),
        (
            "missing sub",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, Some("acme-hs"), &without(acme.clone(), "sub"), &hs(ACME_SECRET))
            )),
        ),
        (
            "missing aud",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, Some("acme-hs"), &without(acme.clone(), "aud"), &hs(ACME_SECRET))
            )),
        ),
        (
            "tenant A's claims re-signed with B's key, A's iss",
            Some(format!("Bearer {}", sign(Algorithm::HS256, Some("globex-hs"), &acme, &hs(GLOBEX_SECRET)))),
        ),
        (
            "tenant A's claims re-signed with B's secret under A's kid",
            Some(format!("Bearer {}", sign(Algorithm::HS256, Some("acme-hs"), &acme, &hs(GLOBEX_SECRET)))),
        ),
        (
            "RS256 signed with another RSA key",
            Some(format!("Bearer {}", sign(Algorithm::RS256, Some("acme-rsa"), &acme, &other_rsa))),
        ),
    ];
    for (case, header) in cases {
        let mut request = http().get(stack.url("/dev/v1/projects"));
        if let Some(header) = &header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        let detail = problem_detail(status, &headers, &body, 401);
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{case}: {challenge}");
        if let Some(token) = header.as_deref().and_then(|h| h.split_once(' ')).map(|(_, t)| t).filter(|t| t.len() > 20)
        {
            assert!(!text.contains(token) && !challenge.contains(token), "{case}: the token is echoed");
        }
        assert!(!detail.is_empty(), "{case}: says what was wrong");
    }
    assert_eq!(stack.stats().await.requests, 0, "no bad token spent budget");

    // The controls: each kind of key, and an expiry within the leeway, pass.
    let globex_ec = EncodingKey::from_ec_pem(&std::fs::read(key_file("globex-ec.pem")).unwrap()).unwrap();
    let acme_rsa = EncodingKey::from_rsa_pem(&std::fs::read(key_file("acme-rsa.pem")).unwrap()).unwrap();
    for (case, token) in [
        ("HS256", valid.clone()),
        ("RS256", sign(Algorithm::RS256, Some("acme-rsa"), &acme, &acme_rsa)),
        ("ES256", sign(Algorithm::ES256, Some("globex-ec"), &claims("globex", "projects:read"), &globex_ec)),
        ("EdDSA", initech_token("projects:read")),
        (
            "expired within the leeway",
            sign(Algorithm::HS256, Some("acme-hs"), &with(acme.clone(), "exp", json!(now() - 10)), &hs(ACME_SECRET)),
        ),
        (
            "scope as a JSON array",
            sign(
                Algorithm::HS256,
                Some("acme-hs"),
                &with(acme.clone(), "scope", json!(["projects:read"])),
                &hs(ACME_SECRET),
            ),
        ),
    ] {
        let (status, _, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&token), None).await;
        assert_eq!(status, PROJECTS_OK, "{case}: {body}");
    }
}

fn names(body: &Value, field: &str) -> Vec<String> {
    let mut names: Vec<String> =
        body[field].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_tenant_sees_and_touches_only_its_own_projects() {
    let stack = Stack::start(Options::default()).await;
    let acme = token("acme", TENANT_SCOPES);
    let globex = stack.projects.named("globex-live").clone();
    let globex_app = globex.vendor_key.clone();

    let (_, _, list) = call(&stack, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    assert_eq!(names(&list, "projects"), ["acme-mobile", "acme-web"]);
    let (_, _, all) = call(&stack, Method::GET, "/dev/v1/projects", Some(&token("ops", ALL_SCOPES)), None).await;
    assert_eq!(all["projects"].as_array().unwrap().len(), 5, "admin sees every project");
    let (_, _, initech) =
        call(&stack, Method::GET, "/dev/v1/projects", Some(&initech_token("projects:read")), None).await;
    assert_eq!(names(&initech, "projects"), ["initech-staging"], "project_ids grant ownership");

    let foreign: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/dev/v1/project?id={}", globex.id), None),
        (Method::GET, "/dev/v1/project?name=globex-live".into(), None),
        (Method::POST, "/dev/v1/project_status".into(), Some(json!({"id": globex.id, "status": 0}))),
        (Method::DELETE, "/dev/v1/project".into(), Some(json!({"id": globex.id}))),
        (
            Method::POST,
            "/dev/v1/recording_config".into(),
            Some(json!({"id": globex.id, "recording_server": "1.2.3.4:5"})),
        ),
        (Method::POST, "/dev/v1/signkey".into(), Some(json!({"id": globex.id, "enable": false}))),
        (Method::POST, "/dev/v1/reset_signkey".into(), Some(json!({"id": globex.id}))),
        (Method::GET, format!("/dev/v3/usage?from_date=2026-01-01&to_date=2026-01-31&project_id={}", globex.id), None),
        (Method::POST, "/dev/v1/kicking-rule".into(), Some(json!({"appid": globex_app, "cname": "launch-event"}))),
        (Method::GET, format!("/dev/v1/kicking-rule?appid={globex_app}"), None),
        (Method::PUT, "/dev/v1/kicking-rule".into(), Some(json!({"appid": globex_app, "id": 1, "time": 5}))),
        (Method::DELETE, "/dev/v1/kicking-rule".into(), Some(json!({"appid": globex_app, "id": 1}))),
        (Method::GET, format!("/dev/v1/channel/{globex_app}"), None),
        (Method::GET, format!("/dev/v1/channel/user/{globex_app}/launch-event"), None),
        (Method::GET, format!("/dev/v1/channel/user/{globex_app}/launch-event/hosts_only"), None),
        (Method::GET, format!("/dev/v1/channel/user/property/{globex_app}/9001/launch-event"), None),
    ];
    let missing: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/dev/v1/project?id=no-such-project".into(), None),
        (Method::POST, "/dev/v1/project_status".into(), Some(json!({"id": "no-such-project", "status": 0}))),
        (Method::GET, format!("/dev/v1/channel/{}", "0".repeat(32)), None),
    ];
    for (method, path, body) in foreign.into_iter().chain(missing) {
        let (status, headers, answer) = call(&stack, method.clone(), &path, Some(&acme), body).await;
        let detail = problem_detail(status, &headers, &answer, 404);
        assert!(detail.contains("not found"), "{method} {path}: {detail}");
    }
    // Another tenant's project and a missing one read the same.
    let (_, _, theirs) =
        call(&stack, Method::GET, &format!("/dev/v1/project?id={}", globex.id), Some(&acme), None).await;
    let (_, _, nobodys) = call(&stack, Method::GET, "/dev/v1/project?id=zzz", Some(&acme), None).await;
    assert_eq!((&theirs["title"], &theirs["type"]), (&nobodys["title"], &nobodys["type"]));

    // Usage: another tenant's projects are dropped; none means all of the caller's.
    let (_, _, usage) = call(
        &stack,
        Method::GET,
        &format!("/dev/v1/usage?from_date=2026-01-01&to_date=2026-01-10&projects={}", globex.id),
        Some(&acme),
        None,
    )
    .await;
    assert_eq!(usage, json!({"usages": []}));
    let (_, _, usage) =
        call(&stack, Method::GET, "/dev/v1/usage?from_date=2026-01-01&to_date=2026-01-10", Some(&acme), None).await;
    let mut reported: Vec<&str> =
        usage["usages"].as_array().unwrap().iter().map(|u| u["project"].as_str().unwrap()).collect();
    reported.sort();
    let mut own = vec![stack.projects.named("acme-web").id.as_str(), stack.projects.named("acme-mobile").id.as_str()];
    own.sort();
    assert_eq!(reported, own);

    // Creating: only under the tenant's prefix.
    let (status, headers, body) =
        call(&stack, Method::POST, "/dev/v1/project", Some(&acme), Some(json!({"name": "globex-evil"}))).await;
    assert!(problem_detail(status, &headers, &body, 403).contains("acme-"));
    let (status, _, created) =
        call(&stack, Method::POST, "/dev/v1/project", Some(&acme), Some(json!({"name": "acme-new"}))).await;
    assert_eq!(status, PROJECTS_OK, "{created}");

    // Nothing of globex's changed upstream.
    let stats = stack.stats().await;
    for write in [
        "set_project_status",
        "delete_project",
        "set_recording_config",
        "enable_sign_key",
        "reset_sign_key",
        "create_kicking_rule",
    ] {
        assert_eq!(stats.by_operation.get(write), None, "{write} reached the sandbox");
    }
    let still = console_client(&stack.sandbox).get_project().id(&globex.id).send().await.unwrap().into_inner();
    assert_eq!(still.project.projects()[0], globex);
}

#[tokio::test]
async fn a_missing_scope_is_403_with_insufficient_scope() {
    let stack = Stack::start(Options::default()).await;
    let reader = token("acme", "projects:read");
    let app = stack.app("acme-web");
    for (method, path, body, scope) in [
        (
            Method::POST,
            "/dev/v1/kicking-rule".to_string(),
            Some(json!({"appid": app, "cname": "lobby"})),
            "kicking:write",
        ),
        (Method::GET, format!("/dev/v1/channel/{app}"), None, "channels:read"),
        (Method::GET, "/dev/v1/usage?from_date=2026-01-01&to_date=2026-01-02".to_string(), None, "usage:read"),
        (Method::POST, "/dev/v1/project".to_string(), Some(json!({"name": "acme-x"})), "projects:write"),
        (Method::POST, "/admin/cache/purge".to_string(), None, "admin"),
    ] {
        let (status, headers, answer) = call(&stack, method, &path, Some(&reader), body).await;
        problem_detail(status, &headers, &answer, 403);
        assert_eq!(
            headers["www-authenticate"],
            format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"").as_str()
        );
    }
    // A token cannot give itself scopes its tenant lacks.
    let greedy = token("globex", ALL_SCOPES);
    let (status, _, _) = call(&stack, Method::POST, "/admin/cache/purge", Some(&greedy), None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn app_certificates_are_null_without_projects_secrets() {
    let stack = Stack::start(Options::default()).await;
    let web = stack.projects.named("acme-web").clone();
    let certificate = web.sign_key.clone().unwrap();
    assert_eq!(certificate.len(), 32);
    let plain = token("acme", "projects:read projects:write");
    let secrets = token("acme", "projects:read projects:write projects:secrets");

    let plain_client = stack.client(&plain);
    let listed = plain_client.list_projects().send().await.unwrap().into_inner();
    assert!(listed.projects.iter().all(|p| p.sign_key.is_none()), "redacted in lists");
    let got = plain_client.get_project().id(&web.id).send().await.unwrap().into_inner();
    assert_eq!(got.project.projects()[0].sign_key, None);
    let status: types::SetProjectStatusRequest = typed(json!({"id": web.id, "status": 1}));
    let changed = plain_client.set_project_status().body(status).send().await.unwrap().into_inner();
    assert_eq!(changed.project.projects()[0].sign_key, None, "redacted in write answers");
    let created = plain_client
        .create_project()
        .body(typed::<types::CreateProjectRequest>(json!({"name": "acme-certified", "enable_sign_key": true})))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.project.projects()[0].sign_key, None);

    let secret_client = stack.client(&secrets);
    let listed = secret_client.list_projects().send().await.unwrap().into_inner();
    let web_listed = listed.projects.iter().find(|p| p.id == web.id).unwrap();
    assert_eq!(web_listed.sign_key.as_deref(), Some(certificate.as_str()));
    let got = secret_client.get_project().name("acme-web").send().await.unwrap().into_inner();
    assert_eq!(got.project.projects()[0].sign_key.as_deref(), Some(certificate.as_str()));

    // A reset answers the new certificate (live): redacted without the scope, then seen with it.
    let reset = || -> types::ProjectIdRequest { typed(json!({"id": web.id})) };
    let answer = plain_client.reset_sign_key().body(reset()).send().await.unwrap().into_inner();
    assert_eq!(answer.project.expect("live, the project").projects()[0].sign_key, None, "a new certificate, redacted");
    let got = secret_client.get_project().name("acme-web").send().await.unwrap().into_inner();
    let reset_certificate = got.project.projects()[0].sign_key.clone().unwrap();
    assert_eq!(reset_certificate.len(), 32);
    assert_ne!(reset_certificate, certificate, "the reset made a new one");
    let listed_again = secret_client.list_projects().send().await.unwrap().into_inner();
    assert_eq!(listed_again.projects.iter().find(|p| p.id == web.id).unwrap().sign_key, Some(reset_certificate));

    // globex's tenant may never see certificates, whatever its token asks for.
    let greedy = stack.client(&token("globex", ALL_SCOPES));
    let listed = greedy.list_projects().send().await.unwrap().into_inner();
    assert!(!listed.projects.is_empty() && listed.projects.iter().all(|p| p.sign_key.is_none()));
}

#[tokio::test]
async fn rotation_accepts_every_configured_key_and_rejects_removed_ones() {
    let acme_rsa = EncodingKey::from_rsa_pem(&std::fs::read(key_file("acme-rsa.pem")).unwrap()).unwrap();
    let rsa_token = sign(Algorithm::RS256, Some("acme-rsa"), &claims("acme", TENANT_SCOPES), &acme_rsa);
    let hs_token = token("acme", TENANT_SCOPES);

    let both = Stack::start(Options::default()).await;
    for token in [&hs_token, &rsa_token] {
        assert_eq!(call(&both, Method::GET, "/dev/v1/projects", Some(token), None).await.0, PROJECTS_OK);
    }
    let rotated = Stack::start(Options { acme_keys: vec![acme_rsa_key()], ..Options::default() }).await;
    assert_eq!(call(&rotated, Method::GET, "/dev/v1/projects", Some(&rsa_token), None).await.0, PROJECTS_OK);
    let (status, headers, body) = call(&rotated, Method::GET, "/dev/v1/projects", Some(&hs_token), None).await;
    assert!(problem_detail(status, &headers, &body, 401).contains("kid"));
}

/// Runs python3 with PyJWT, if both are here (CI installs them and sets REQUIRE_PYJWT=1).
fn pyjwt(script: &str) -> Option<String> {
    let output = std::process::Command::new("python3").args(["-c", script]).output();
    match output {
        Ok(output) if output.status.success() => Some(String::from_utf8(output.stdout).unwrap().trim().to_string()),
        other => {
            assert!(std::env::var("REQUIRE_PYJWT").is_err(), "python3 with PyJWT is required: {other:?}");
            eprintln!("SKIPPED: python3 with PyJWT (and cryptography) is not installed");
            None
        }
    }
}

#[tokio::test]
async fn tokens_minted_by_pyjwt_are_accepted() {
    let stack = Stack::start(Options::default()).await;
    let claims = claims("acme", TENANT_SCOPES);
    let hs = format!(
        "import jwt, json; print(jwt.encode(json.loads('{claims}'), '{ACME_SECRET}', algorithm='HS256', headers={{'kid': 'acme-hs'}}))"
    );
    let rs = format!(
        "import jwt, json; print(jwt.encode(json.loads('{claims}'), open('{}').read(), algorithm='RS256', headers={{'kid': 'acme-rsa'}}))",
        key_file("acme-rsa.pem").display()
    );
    for script in [hs, rs] {
        let Some(token) = pyjwt(&script) else { return };
        let (status, _, body) = call(&stack, Method::GET, "/dev/v1/projects", Some(&token), None).await;
        assert_eq!(status, PROJECTS_OK, "{body}");
        assert_eq!(names(&body, "projects"), ["acme-mobile", "acme-web"]);
    }
}

#[tokio::test]
async fn the_token_command_mints_accepted_tokens_and_tokens_never_reach_the_logs() {
    let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 10).await;
    let initech = console_client(&sandbox).list_projects().send().await.unwrap().into_inner();
    let initech = initech.projects.iter().find(|p| p.name == "initech-staging").unwrap().id.clone();
    let dir = temp_dir("token");
    let config = dir.join("gateway.toml");
    std::fs::write(&config, gateway_toml(&sandbox.base_url(), &initech, &Options::default())).unwrap();
    let binary = env!("CARGO_BIN_EXE_gateway-under-test");

    let mint = |args: &[&str]| {
        let output = std::process::Command::new(binary)
            .args(["token", "--config", config.to_str().unwrap(), "--tenant", "acme"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let hs_token = mint(&["--scope", "projects:read", "--ttl", "5m"]);
    let rs_token =
        mint(&["--scope", "projects:read", "--kid", "acme-rsa", "--key", key_file("acme-rsa.pem").to_str().unwrap()]);

    // A gateway process with debug logs, fed good and bad tokens.
    let text = std::fs::read_to_string(&config).unwrap();
    let gateway = GatewayProcess::start(&text, &dir, "logged", Output::CaptureDebug).await;
    let base = gateway.base.clone();
    for token in [&hs_token, &rs_token] {
        let response = http().get(format!("{base}/dev/v1/projects")).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), PROJECTS_OK);
    }
    let forged = format!("{}x", &hs_token[..hs_token.len() - 1]);
    let response = http().get(format!("{base}/dev/v1/projects")).bearer_auth(&forged).send().await.unwrap();
    assert_eq!(response.status(), 401);

    let logs = gateway.logs().await;
    assert!(logs.contains("DEBUG"), "debug logs were on");
    for secret in [hs_token.as_str(), rs_token.as_str(), forged.as_str(), ACME_SECRET, CUSTOMER_SECRET] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_key_given_as_a_jwk_verifies_its_tokens() {
    let jwk = format!(
        "{{ kid = \"acme-jwk\", alg = \"RS256\", jwk = \"file:{}\" }}",
        key_file("acme-rsa-2.jwk.json").display()
    );
    let stack = Stack::start(Options { acme_keys: vec![acme_hs_key(), jwk], ..Options::default() }).await;
    let private = EncodingKey::from_rsa_pem(&std::fs::read(key_file("acme-rsa-2.pem")).unwrap()).unwrap();
    let good = sign(Algorithm::RS256, Some("acme-jwk"), &claims("acme", TENANT_SCOPES), &private);
    assert_eq!(call(&stack, Method::GET, "/dev/v1/projects", Some(&good), None).await.0, PROJECTS_OK);
    let other = EncodingKey::from_rsa_pem(&std::fs::read(key_file("acme-rsa.pem")).unwrap()).unwrap();
    let wrong = sign(Algorithm::RS256, Some("acme-jwk"), &claims("acme", TENANT_SCOPES), &other);
    assert_eq!(call(&stack, Method::GET, "/dev/v1/projects", Some(&wrong), None).await.0, 401);
}
