//! Tracing end to end: a real gateway process exports its spans over OTLP/HTTP to a receiver in
//! the test, which decodes them (`ExportTraceServiceRequest`, with the `opentelemetry-proto`
//! crate); the sandbox says which `traceparent` each upstream request carried.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use agora_sandbox::Faults;
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

/// A span as the receiver got it: ids in hex, attributes as text.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: SpanKind,
    attributes: BTreeMap<String, String>,
    /// (trace id, span id) of each link.
    links: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces`, protobuf.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("an ExportTraceServiceRequest");
                    kept.lock().unwrap().extend(decode(request));
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(any_port()).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans().into_iter().filter(|span| span.trace_id == trace_id).collect()
    }

    /// The server span of `trace_id`, once exported (its children end before it, so they are in
    /// by then).
    async fn server_span(&self, trace_id: &str) -> Received {
        wait_for(&format!("the server span of {trace_id}"), async || {
            self.trace(trace_id).iter().any(|span| span.kind == SpanKind::Server)
        })
        .await;
        let servers: Vec<_> = self.trace(trace_id).into_iter().filter(|span| span.kind == SpanKind::Server).collect();
        assert_eq!(servers.len(), 1, "one server span: {servers:#?}");
        servers[0].clone()
    }
}

fn decode(request: ExportTraceServiceRequest) -> Vec<Received> {
    let mut spans = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)?)))
                    .collect();
                spans.push(Received {
                    service: service.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    name: span.name.clone(),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    attributes,
                    links: span.links.iter().map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id))).collect(),
                });
            }
        }
    }
    spans
}

fn text(value: &AnyValue) -> Option<String> {
    Some(match value {
        AnyValue::StringValue(text) => text.clone(),
        AnyValue::BoolValue(flag) => flag.to_string(),
        AnyValue::IntValue(number) => number.to_string(),
        AnyValue::DoubleValue(number) => number.to_string(),
        _ => return None,
    })
}

/// A W3C `traceparent` of a sampled caller, and its trace id.
fn caller_trace(n: u8) -> (String, String) {
    let trace_id = format!("{n:02x}f7651916cd43dd8448eb211c80319c");
    (format!("00-{trace_id}-b7ad6b7169203331-01"), trace_id)
}

async fn traced_call(
    base: &str,
    method: Method,
    path: &str,
    token: &str,
    traceparent: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request =
        http().request(method, format!("{base}{path}")).bearer_auth(token).header("traceparent", traceparent);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// The `traceparent`s the sandbox received, by path.
async fn upstream_traceparents(sandbox: &agora_sandbox::Sandbox) -> Vec<(String, String)> {
    let url = format!("{}/__sandbox/traceparents", sandbox.root_url());
    let seen: Value = http().get(url).send().await.unwrap().json().await.unwrap();
    let requests = seen["requests"].as_array().unwrap();
    requests.iter().map(|r| (r["path"].as_str().unwrap().into(), r["traceparent"].as_str().unwrap().into())).collect()
}

fn telemetry_options(endpoint: &str) -> Options {
    let sections = format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"gateway-under-test\"\nsample_ratio = 1.0\n"
    );
    Options { sections, ..Options::default() }
}

/// A sandbox (the demo account, at `rate_limit`) and a gateway process in front of it, configured
/// with `options`, its config written to a directory of its own.
struct Traced {
    dir: std::path::PathBuf,
    sandbox: agora_sandbox::Sandbox,
    projects: DemoProjects,
    toml: String,
    gateway: GatewayProcess,
}

impl Traced {
    async fn start(name: &str, rate_limit: u32, options: &Options, output: Output, env: &[(&str, &str)]) -> Self {
        let dir = temp_dir(&format!("tracing-{name}"));
        let sandbox = start_sandbox(agora_sandbox::Seed::Demo, rate_limit).await;
        let projects =
            DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
        let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, options);
        let gateway = GatewayProcess::spawn(&toml, &dir, name, output, env, None).await;
        Traced { dir, sandbox, projects, toml, gateway }
    }
}

/// Spans are exported every 100 ms (not the SDK's default 5 s), so the test need not wait.
const QUICK_EXPORT: [(&str, &str); 1] = [("OTEL_BSP_SCHEDULE_DELAY", "100")];

#[tokio::test]
async fn a_traced_request_is_one_trace_from_the_caller_to_agora_and_back() {
    let _load = LOAD.lock().await;
    let receiver = Receiver::start().await;
    let options = telemetry_options(&receiver.url);
    let Traced { dir, sandbox, projects, gateway, .. } =
        Traced::start("traced", 10, &options, Output::CaptureWarn, &QUICK_EXPORT).await;
    let acme = token("acme", TENANT_SCOPES);
    let app = projects.named("acme-web").vendor_key.clone();
    let path = format!("/dev/v1/channel/{app}");

    // A cold read, sent with the caller's trace.
    let (traceparent, trace_id) = caller_trace(1);
    let answer = traced_call(&gateway.base, Method::GET, &path, &acme, &traceparent, None).await;
    assert_eq!(answer.status(), 200);
    let answered = answer.headers()["traceparent"].to_str().unwrap().to_string();
    assert!(answered.starts_with(&format!("00-{trace_id}-")), "the answer continues the trace: {answered}");
    let server = receiver.server_span(&trace_id).await;
    assert_eq!(server.service, "gateway-under-test");
    assert_eq!(server.name, "GET /dev/v1/channel/{appid}", "named by the route template, not the path");
    assert_eq!(server.parent, "b7ad6b7169203331", "a child of the caller's span");
    assert_eq!(answered, format!("00-{trace_id}-{}-01", server.span_id), "the answer names the server span");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", "/dev/v1/channel/{appid}"),
        ("url.path", path.as_str()),
        ("http.response.status_code", "200"),
        ("client.address", "127.0.0.1"),
        ("server.address", "127.0.0.1"),
        ("gateway.tenant", "acme"),
        ("gateway.operation", "list_channels"),
        ("gateway.cache", "MISS"),
    ] {
        assert_eq!(server.attribute(key), Some(value), "{key} of {server:#?}");
    }
    let spans = receiver.trace(&trace_id);
    let named = |name: &str| -> Vec<Received> { spans.iter().filter(|span| span.name == name).cloned().collect() };
    let children_of = |parent: &Received| -> Vec<String> {
        spans.iter().filter(|span| span.parent == parent.span_id).map(|span| span.name.clone()).collect()
    };
    let direct = children_of(&server);
    for child in ["authenticate", "cache fill", "egress"] {
        assert!(direct.iter().any(|name| name == child), "{child} under the server span: {direct:?}");
    }
    // The fill of the channel list (the ownership check filled the project list too).
    let fill = named("cache fill")
        .into_iter()
        .find(|fill| fill.attribute("gateway.cache.key").is_some_and(|key| key.starts_with("list_channels/")))
        .expect("the channel list's fill");
    let under_fill = children_of(&fill);
    assert!(under_fill.contains(&"budget slot".to_string()), "the wait for a slot, under the fill: {under_fill:?}");
    let slot = named("budget slot").into_iter().find(|slot| slot.parent == fill.span_id).unwrap();
    assert_eq!(slot.attribute("gateway.lane"), Some("acme"), "{slot:#?}");
    assert!(slot.attribute("gateway.queue.position").is_some(), "{slot:#?}");
    let upstream = spans
        .iter()
        .find(|span| span.kind == SpanKind::Client && span.parent == fill.span_id)
        .expect("the upstream attempt, under the fill");
    assert_eq!(upstream.name, "GET /dev/v1/channel/{appid}");
    assert_eq!(upstream.attribute("http.response.status_code"), Some("200"));
    assert_eq!(upstream.attribute("gateway.attempt"), Some("1"));
    assert!(
        upstream.attribute("server.address").is_some_and(|domain| domain.starts_with("127.0.0.1")),
        "{upstream:#?}"
    );
    assert!(
        upstream.attribute("agora.request_id").is_some_and(|id| !id.is_empty()),
        "Agora's request id: {upstream:#?}"
    );
    // Agora saw the same trace, as a child of the attempt's span.
    let sent = upstream_traceparents(&sandbox).await;
    let channel_call = sent.iter().find(|(at, _)| at.starts_with("/dev/v1/channel/")).expect("a traced upstream call");
    assert_eq!(channel_call.1, format!("00-{trace_id}-{}-01", upstream.span_id));

    // A hit: the same trace shape without any upstream span.
    let (traceparent, hit_trace) = caller_trace(2);
    let answer = traced_call(&gateway.base, Method::GET, &path, &acme, &traceparent, None).await;
    assert_eq!(answer.headers()["x-cache"], "HIT");
    let server = receiver.server_span(&hit_trace).await;
    assert_eq!(server.attribute("gateway.cache"), Some("HIT"));
    let spans = receiver.trace(&hit_trace);
    assert!(spans.iter().all(|span| span.kind != SpanKind::Client && span.name != "cache fill"), "{spans:#?}");
    assert!(spans.iter().any(|span| span.name == "authenticate"));

    // Concurrent cold reads: one fills, the others wait for it, linked to its fill.
    // (1.5 s: long enough that a busy machine still sends them all while the fill is under way.)
    set_faults(&sandbox, Faults { latency_ms: 1_500, ..Default::default() }).await;
    let users = format!("/dev/v1/channel/user/{app}/lobby");
    let traces: Vec<_> = (10..15).map(caller_trace).collect();
    let reads = traces.iter().map(|(tp, _)| traced_call(&gateway.base, Method::GET, &users, &acme, tp, None));
    for answer in futures::future::join_all(reads).await {
        assert_eq!(answer.status(), 200);
    }
    set_faults(&sandbox, Faults::default()).await;
    let mut fills = Vec::new();
    let mut waits = Vec::new();
    for (_, trace_id) in &traces {
        receiver.server_span(trace_id).await;
        for span in receiver.trace(trace_id) {
            match span.name.as_str() {
                "cache fill"
                    if span.attribute("gateway.cache.key").is_some_and(|k| k.starts_with("list_channel_users")) =>
                {
                    fills.push(span);
                }
                "cache wait" => waits.push(span),
                _ => {}
            }
        }
    }
    assert_eq!(fills.len(), 1, "one fill: {fills:#?}");
    assert!(!waits.is_empty(), "the others waited");
    let fill = (fills[0].trace_id.clone(), fills[0].span_id.clone());
    for wait in &waits {
        assert_eq!(wait.links, vec![fill.clone()], "a coalesced wait links to the fill: {wait:#?}");
    }

    // A write's log lines carry its trace id (here: its audit line).
    let (traceparent, write_trace) = caller_trace(3);
    let rule = json!({ "appid": app, "uid": 41, "time": 5 });
    let answer =
        traced_call(&gateway.base, Method::POST, "/dev/v1/kicking-rule", &acme, &traceparent, Some(rule)).await;
    assert!(answer.status().is_success());
    let server = receiver.server_span(&write_trace).await;
    assert_eq!(server.name, "POST /dev/v1/kicking-rule");
    let logs = gateway.logs().await;
    let audit = logs.lines().find(|line| line.contains("create_kicking_rule")).expect("the write's audit line");
    assert!(audit.contains(&format!("trace_id={write_trace}")), "{audit}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_unreachable_collector_changes_no_answer_and_its_dropped_spans_are_counted() {
    // A port nobody listens on.
    let closed = format!("http://127.0.0.1:{}", free_port());
    // (The sandbox is bound, so it lives as long as the test.)
    let Traced { dir, gateway, sandbox: _sandbox, .. } =
        Traced::start("unreachable", 0, &telemetry_options(&closed), Output::Discard, &QUICK_EXPORT).await;
    let acme = token("acme", TENANT_SCOPES);
    for n in 0..20u8 {
        let (traceparent, trace_id) = caller_trace(100 + n);
        let answer = traced_call(&gateway.base, Method::GET, "/dev/v1/projects", &acme, &traceparent, None).await;
        assert_eq!(answer.status(), PROJECTS_OK);
        assert!(answer.headers()["traceparent"].to_str().unwrap().contains(&trace_id));
        // Not traced by its caller: traced anyway (sample_ratio 1.0), answered the same.
        let (status, _, _) = call_at(&gateway.base, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
        assert_eq!(status, PROJECTS_OK);
    }
    wait_for("the dropped spans counted", async || {
        metric_value(&metrics_text(&gateway.base).await, "agora_gateway_trace_spans_dropped_total") >= 40
    })
    .await;
    let metrics = metrics_text(&gateway.base).await;
    assert_eq!(metric_value(&metrics, "agora_gateway_trace_spans_exported_total"), 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_sample_ratio_picks_new_traces_and_a_callers_decision_is_followed() {
    let receiver = Receiver::start().await;
    let mut options = telemetry_options(&receiver.url);
    options.sections = options.sections.replace("sample_ratio = 1.0", "sample_ratio = 0.0");
    let Traced { dir, gateway, sandbox: _sandbox, .. } =
        Traced::start("sampled", 0, &options, Output::Discard, &QUICK_EXPORT).await;
    let acme = token("acme", TENANT_SCOPES);
    // Not traced by their callers, and none of the 0.0 sampled: no span, no traceparent.
    for _ in 0..10 {
        let (status, headers, _) = call_at(&gateway.base, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
        assert_eq!(status, PROJECTS_OK);
        assert!(!headers.contains_key("traceparent"));
    }
    // A caller that did not sample its trace: continued (flag 00), not recorded.
    let unsampled_id = "0af7651916cd43dd8448eb211c80319d";
    let unsampled = format!("00-{unsampled_id}-b7ad6b7169203331-00");
    let answer = traced_call(&gateway.base, Method::GET, "/dev/v1/projects", &acme, &unsampled, None).await;
    let answered = answer.headers()["traceparent"].to_str().unwrap().to_string();
    assert!(answered.starts_with(&format!("00-{unsampled_id}-")) && answered.ends_with("-00"), "{answered}");
    // A caller that sampled its trace: traced whatever the ratio.
    let (traceparent, trace_id) = caller_trace(7);
    let answer = traced_call(&gateway.base, Method::GET, "/dev/v1/projects", &acme, &traceparent, None).await;
    assert_eq!(answer.status(), PROJECTS_OK);
    receiver.server_span(&trace_id).await;
    let traces: std::collections::BTreeSet<String> = receiver.spans().into_iter().map(|span| span.trace_id).collect();
    assert_eq!(traces.into_iter().collect::<Vec<_>>(), vec![trace_id], "only the caller's sampled trace");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn without_an_endpoint_a_callers_trace_still_reaches_agora_and_comes_back() {
    let Traced { dir, sandbox, projects, toml, gateway } =
        Traced::start("untraced", 0, &Options::default(), Output::Discard, &[]).await;
    assert!(!toml.contains("[telemetry]"));
    let acme = token("acme", TENANT_SCOPES);
    reset_sandbox(&sandbox).await;
    // A caller without a trace: nothing added, on either side.
    let (status, headers, _) = call_at(&gateway.base, Method::GET, "/dev/v1/projects", Some(&acme), None).await;
    assert_eq!((status, headers.contains_key("traceparent")), (PROJECTS_OK, false));
    assert!(upstream_traceparents(&sandbox).await.is_empty(), "no traceparent sent to Agora");
    // A caller with one (a miss: a new page of channels): continued to Agora and back.
    let (traceparent, trace_id) = caller_trace(9);
    let app = projects.named("acme-web").vendor_key.clone();
    let path = format!("/dev/v1/channel/{app}");
    let answer = traced_call(&gateway.base, Method::GET, &path, &acme, &traceparent, None).await;
    assert_eq!(answer.status(), 200);
    let answered = answer.headers()["traceparent"].to_str().unwrap().to_string();
    assert!(answered.starts_with(&format!("00-{trace_id}-")) && answered.ends_with("-01"), "{answered}");
    assert_ne!(answered, traceparent, "a span of the gateway's own");
    let sent = upstream_traceparents(&sandbox).await;
    let channel_call = sent.iter().find(|(at, _)| at.starts_with("/dev/v1/channel/")).expect("a traced upstream call");
    assert!(channel_call.1.starts_with(&format!("00-{trace_id}-")), "{sent:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
