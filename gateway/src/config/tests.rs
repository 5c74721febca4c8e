//! The configuration: defaults, field-naming errors, secrets, uniqueness.

use super::*;

const MINIMAL: &str = r#"
    [upstream]
    base_url = "sandbox"

    [[tenants]]
    id = "acme"
    issuer = "https://auth.acme.example"
    audience = "agora-gateway"
    scopes = ["projects:read"]
    project_name_prefix = "acme-"
    keys = [{ kid = "k1", alg = "HS256", secret = "0123456789abcdef0123456789abcdef" }]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("."))
}

#[test]
fn defaults_fill_what_is_left_out() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.throttle.rate, 10);
    assert_eq!(config.throttle.burst, 1);
    assert_eq!(config.throttle.max_wait, Duration::from_secs(5));
    assert_eq!(config.cache.project_ttl, Duration::from_secs(60));
    assert_eq!(config.cache.max_bytes, ByteSize::mib(64));
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.request_timeout(), Duration::from_secs(16));
    assert_eq!(config.tenants[0].weight, 1);
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (MINIMAL.replace("alg = \"HS256\"", "alg = \"XS256\""), "tenants[0].keys[0]"),
        (MINIMAL.replace("scopes = [\"projects:read\"]", "scopes = [\"projects:raed\"]"), "tenants[0].scopes[0]"),
        (format!("{MINIMAL}\n[throttle]\nrate = 0\n"), "throttle.rate"),
        (format!("{MINIMAL}\n[throttle]\nrate = 100000\n"), "throttle.rate"),
        (format!("{MINIMAL}\n[throttle]\nmax_wait = \"soon\"\n"), "throttle.max_wait"),
        (format!("{MINIMAL}\n[cache]\nmax_bytes = \"lots\"\n"), "cache.max_bytes"),
        (format!("{MINIMAL}\n[cache]\nproject_tll = \"5s\"\n"), "cache"),
        (MINIMAL.replace("\"sandbox\"", "\"https://api.agora.io/dev\""), "upstream.customer_id"),
        (MINIMAL.replace("0123456789abcdef0123456789abcdef", "short"), "tenants[0].keys[0]"),
        (
            MINIMAL
                .replace("secret = \"0123456789abcdef0123456789abcdef\"", "secret = \"env:AGORA_GATEWAY_TEST_UNSET\""),
            "tenants[0].keys[0].secret",
        ),
        (format!("{MINIMAL}\n[telemetry]\notlp_endpoint = \"127.0.0.1:4318\"\n"), "telemetry.otlp_endpoint"),
        (format!("{MINIMAL}\n[telemetry]\notlp_endpoint = \"grpc://collector:4317\"\n"), "telemetry.otlp_endpoint"),
        (format!("{MINIMAL}\n[telemetry]\nsample_ratio = 1.5\n"), "telemetry.sample_ratio"),
        (format!("{MINIMAL}\n[server]\nruntime = \"threads\"\n"), "server"),
        (format!("{MINIMAL}\n[server]\nbusy_threshold = 1.5\n"), "server.busy_threshold"),
        (format!("{MINIMAL}\n[server]\nbusy_threshold = -0.1\n"), "server.busy_threshold"),
        (format!("{MINIMAL}\n[server]\nidle_to_move = -1\n"), "server.idle_to_move"),
        (format!("{MINIMAL}\n[telemetry]\nservice_name = \" \"\n"), "telemetry.service_name"),
    ];
    for (text, field) in cases {
        let error = parse(&text).expect_err(field);
        assert!(error.field.starts_with(field), "expected an error about {field}, got {error}");
    }
}

#[test]
fn budget_groups_are_checked_and_an_operation_belongs_to_one() {
    let group = |name: &str, operations: &str, rate: u32| {
        format!("[[throttle.groups]]\nname = \"{name}\"\noperations = [{operations}]\nrate = {rate}\n")
    };
    let channels = "\"list_channels\", \"list_channel_users\"";
    let config = parse(&format!("{MINIMAL}\n{}", group("channel-queries", channels, 20))).unwrap();
    let groups = &config.throttle.groups;
    assert_eq!((groups[0].name.as_str(), groups[0].rate, groups[0].burst), ("channel-queries", 20, 1));
    assert_eq!(config.throttle.rate, 10, "the default budget is untouched");
    let twice = format!("{MINIMAL}\n{}{}", group("a", channels, 20), group("b", "\"list_channels\"", 10));
    let error = parse(&twice).unwrap_err();
    assert_eq!(error.field, "throttle.groups[1].operations", "{error}");
    assert!(error.message.contains("list_channels is already in group \"a\""), "{error}");
    let cases = [
        (group("agora", channels, 20), "throttle.groups[0].name"),
        (group("two words", channels, 20), "throttle.groups[0].name"),
        (format!("{}{}", group("a", channels, 20), group("a", "\"get_usage\"", 5)), "throttle.groups[1].name"),
        (group("a", "\"list_channel\"", 20), "throttle.groups[0].operations"),
        (group("a", "", 20), "throttle.groups[0].operations"),
        (group("a", channels, 0), "throttle.groups[0].rate"),
        (format!("{}burst = 30\n", group("a", channels, 20)), "throttle.groups[0].burst"),
        (format!("{}limit = 30\n", group("a", channels, 20)), "throttle.groups[0]"),
    ];
    for (text, field) in cases {
        let error = parse(&format!("{MINIMAL}\n{text}")).expect_err(field);
        assert!(error.field.starts_with(field), "expected an error about {field}, got {error}");
    }
}

#[test]
fn an_area_stands_for_agoras_ladder_and_a_base_url_wins() {
    let upstream = "base_url = \"sandbox\"";
    let account = "customer_id = \"c\"\ncustomer_secret = \"s\"";
    let config = parse(&MINIMAL.replace(upstream, &format!("area = \"eu\"\n{account}"))).unwrap();
    assert_eq!(config.upstream.domains(), Area::Eu.ladder());
    let both = format!("area = \"cn\"\nbase_url = \"https://api.agora.io/dev\"\n{account}");
    assert_eq!(parse(&MINIMAL.replace(upstream, &both)).unwrap().upstream.domains(), ["https://api.agora.io/dev"]);
    let error = parse(&MINIMAL.replace(upstream, &format!("area = \"mars\"\n{account}"))).unwrap_err();
    assert!(error.field.starts_with("upstream"), "{error}");
    let error = parse(&MINIMAL.replace(upstream, account)).unwrap_err();
    assert_eq!(error.field, "upstream.base_url", "{error}");
    assert!(error.message.contains("area"), "{error}");
}

#[test]
fn telemetry_posts_to_the_collectors_traces_path() {
    let config = parse(&format!("{MINIMAL}\n[telemetry]\notlp_endpoint = \"http://collector:4318/\"\n")).unwrap();
    assert_eq!(config.telemetry.traces_url().as_deref(), Some("http://collector:4318/v1/traces"));
    let given = "https://collector.example/otlp/v1/traces";
    let config = parse(&format!("{MINIMAL}\n[telemetry]\notlp_endpoint = \"{given}\"\n")).unwrap();
    assert_eq!(config.telemetry.traces_url().as_deref(), Some(given));
    let default = parse(MINIMAL).unwrap().telemetry;
    assert_eq!(
        (default.traces_url(), default.service_name.as_str(), default.sample_ratio),
        (None, "agora-gateway", 1.0)
    );
}

#[test]
fn secrets_come_from_the_environment_and_files_and_never_show_in_debug() {
    let dir = std::env::temp_dir().join(format!("agora-gateway-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hs.key"), "fedcba9876543210fedcba9876543210\n").unwrap();
    let text = MINIMAL.replace("\"0123456789abcdef0123456789abcdef\"", "\"file:hs.key\"");
    let config = Config::parse(&text, &dir).unwrap();
    let secret = config.tenants[0].keys[0].secret.as_ref().unwrap();
    assert_eq!(secret.expose(), "fedcba9876543210fedcba9876543210");
    assert!(!format!("{config:?}").contains("fedcba98"), "Debug shows the reference, not the value");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tenants_are_unique_by_id_and_issuer() {
    let twice = format!("{MINIMAL}{}", &MINIMAL[MINIMAL.find("[[tenants]]").unwrap()..]);
    assert_eq!(parse(&twice).unwrap_err().field, "tenants[1].id");
    let other_id =
        format!("{MINIMAL}{}", MINIMAL[MINIMAL.find("[[tenants]]").unwrap()..].replace("\"acme\"", "\"globex\""));
    assert_eq!(parse(&other_id).unwrap_err().field, "tenants[1].issuer");
}

#[test]
fn tenants_may_not_share_projects_by_prefix_or_id() {
    let second = |prefix: &str, ids: &str| {
        let tenant = MINIMAL[MINIMAL.find("[[tenants]]").unwrap()..]
            .replace("\"acme\"", "\"globex\"")
            .replace("auth.acme", "auth.globex")
            .replace(
                "project_name_prefix = \"acme-\"",
                &format!("project_name_prefix = \"{prefix}\"\nproject_ids = [{ids}]"),
            );
        format!(
            "{}{tenant}",
            MINIMAL
                .replace("project_name_prefix = \"acme-\"", "project_name_prefix = \"acme-\"\nproject_ids = [\"p1\"]")
        )
    };
    assert!(parse(&second("globex-", "")).is_ok());
    for (prefix, ids) in [("acm", ""), ("acme-l", ""), ("globex-", "\"p1\"")] {
        let error = parse(&second(prefix, ids)).unwrap_err();
        assert!(error.field.starts_with("tenants[1].project_"), "{error}");
        assert!(error.message.contains("\"acme\"") && error.message.contains("\"globex\""), "{error}");
    }
}

#[test]
fn parse_errors_say_where_but_not_what_was_written() {
    let secret = "s3cr3t-value-0123";
    for text in [
        MINIMAL.replace("base_url = \"sandbox\"", &format!("base_url = \"sandbox\"\ncustomer_secret = \"{secret}")),
        MINIMAL.replace("base_url = \"sandbox\"", &format!("base_url = \"sandbox\"\ncustomer_secret = {secret}")),
        MINIMAL.replace("base_url = \"sandbox\"", "base_url = \"sandbox\"\ncustomer_secret = 982451653"),
        MINIMAL.replace("base_url = \"sandbox\"", &format!("base_url = [\"{secret}\"]")),
    ] {
        let error = parse(&text).unwrap_err().to_string();
        assert!(!error.contains(secret) && !error.contains("982451653"), "{error}");
    }
    assert_eq!(
        redact("invalid type: string \"hunter2\", expected a duration"),
        "invalid type: string, expected a duration"
    );
    assert_eq!(redact("invalid type: integer `12345`, expected a string"), "invalid type: integer, expected a string");
    assert_eq!(redact("unknown field `x`, expected `a`"), "unknown field `x`, expected `a`");
}

#[test]
fn generated_secrets_are_fresh_and_long() {
    let (a, b) = (Secret::generate().unwrap(), Secret::generate().unwrap());
    assert_eq!(a.expose().len(), 64);
    assert!(a.expose().chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(a.expose(), b.expose());
}

#[test]
fn a_tenant_may_take_its_keys_from_a_jwks() {
    let jwks_only = MINIMAL.replace(
        "keys = [{ kid = \"k1\", alg = \"HS256\", secret = \"0123456789abcdef0123456789abcdef\" }]",
        "jwks_url = \"https://login.acme.example/certs\"\nalgorithms = [\"RS256\", \"ES256\"]",
    );
    let config = parse(&jwks_only).unwrap();
    assert!(config.tenants[0].has_jwks() && config.tenants[0].keys.is_empty());
    let cases = [
        (jwks_only.replace("https://login.acme.example/certs", "ftp://x"), "tenants[0].jwks_url"),
        (jwks_only.replace("[\"RS256\", \"ES256\"]", "[\"HS256\"]"), "tenants[0].algorithms[0]"),
        (jwks_only.replace("jwks_url", "issuer_discovery = true\njwks_url"), "tenants[0].issuer_discovery"),
        (jwks_only.replace("jwks_url = \"https://login.acme.example/certs\"", ""), "tenants[0].keys"),
        (format!("{jwks_only}\n[jwks]\nrefresh_min = \"2h\"\nrefresh_max = \"1h\"\n"), "jwks.refresh_min"),
    ];
    for (text, field) in cases {
        let error = parse(&text).expect_err(field);
        assert!(error.field.starts_with(field), "expected an error about {field}, got {error}");
    }
}

#[test]
fn the_api_may_be_given_on_several_domains_and_the_audit_a_file() {
    let two = MINIMAL.replace(
        "base_url = \"sandbox\"",
        "base_urls = [\"https://api.agora.io/dev\", \"https://api.sd-rtn.com/dev\"]\ncustomer_id = \"c\"\ncustomer_secret = \"s\"",
    );
    let config = parse(&two).unwrap();
    assert_eq!(config.upstream.domains().len(), 2);
    let cases = [
        (two.replace("base_urls", "base_url = \"https://api.agora.io/dev\"\nbase_urls"), "upstream.base_urls"),
        (two.replace("\"https://api.sd-rtn.com/dev\"", "\"sandbox\""), "upstream.base_urls[1]"),
        (two.replace("\"https://api.sd-rtn.com/dev\"", "\"ftp://x\""), "upstream.base_urls[1]"),
        (format!("{two}\n[audit]\nsink = \"file\"\n"), "audit.path"),
        (format!("{two}\n[audit]\npath = \"audit.jsonl\"\n"), "audit.path"),
    ];
    for (text, field) in cases {
        let error = parse(&text).expect_err(field);
        assert!(error.field.starts_with(field), "expected an error about {field}, got {error}");
    }
    let audited = parse(&format!("{two}\n[audit]\nsink = \"file\"\npath = \"audit.jsonl\"\n")).unwrap();
    assert_eq!(audited.audit.path.as_deref(), Some(Path::new("./audit.jsonl")), "relative to the config file");
}
