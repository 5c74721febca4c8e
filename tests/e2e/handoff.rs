//! Connections handed between serving threads (`server.busy_threshold`, `gateway/src/balance.rs`,
//! `gateway/src/handoff.rs`). With a threshold of 0 any difference in the threads' loads moves connections,
//! so the connections of this test move back and forth while they send requests one after
//! another, two at once (pipelined), split over two writes, and behind a read that waits for
//! Agora's budget.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// One response read off `stream`: its status, its head (lowercased) and its body. `buffer` keeps
/// what was read past it (the next pipelined response).
async fn response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0u8; 16384];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .expect("the connection stays open");
        assert!(read > 0, "the gateway closed a connection between requests");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let status = head.split(' ').nth(1).and_then(|status| status.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|length| length.trim().parse().ok())
        .unwrap_or_else(|| panic!("a response with a content-length: {head}"));
    while buffer.len() < head_end + length {
        let mut chunk = [0u8; 16384];
        let read = stream.read(&mut chunk).await.expect("the connection stays open");
        assert!(read > 0, "the gateway closed a connection in a response");
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = buffer[head_end..head_end + length].to_vec();
    buffer.drain(..head_end + length);
    (status, head, body)
}

/// Requests on one keep-alive connection until `until`: each answer checked against the first
/// answer to the same request. Answers how many were sent.
async fn client(base: String, token: String, until: Instant) -> usize {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let _ = stream.set_nodelay(true);
    let projects = format!("GET /dev/v1/projects HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n\r\n");
    let fresh = projects.replacen("\r\n\r\n", "\r\nCache-Control: no-cache\r\n\r\n", 1);
    let health = "GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n".to_string();
    let (mut buffer, mut expected, mut sent) = (Vec::new(), Vec::<Vec<u8>>::new(), 0);
    let mut round = 0;
    while Instant::now() < until || round < 8 {
        let asked: Vec<(usize, &str)> = match round % 4 {
            // Now and then a read from Agora (it waits for the budget), with a request behind it:
            // a connection with a request in flight is never handed over.
            _ if round % 32 == 9 => {
                stream.write_all(format!("{fresh}{health}").as_bytes()).await.unwrap();
                vec![(0, "a fresh read"), (1, "health")]
            }
            // One request, written whole.
            0 => {
                stream.write_all(projects.as_bytes()).await.unwrap();
                vec![(0, "projects")]
            }
            // Two at once: the second waits in the server's buffer.
            1 => {
                stream.write_all(format!("{projects}{health}").as_bytes()).await.unwrap();
                vec![(0, "projects"), (1, "health")]
            }
            // A head in two writes: the thread may hand the connection over between them.
            2 => {
                let (first, second) = projects.split_at(projects.len() / 2);
                stream.write_all(first.as_bytes()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                stream.write_all(second.as_bytes()).await.unwrap();
                vec![(0, "projects")]
            }
            _ => {
                stream.write_all(health.as_bytes()).await.unwrap();
                vec![(1, "health")]
            }
        };
        for (kind, name) in asked {
            let (status, head, body) = response(&mut stream, &mut buffer).await;
            let ok = if kind == 0 { PROJECTS_OK } else { 200 };
            assert_eq!(status, ok, "{name} on a connection handed between threads: {head}");
            assert!(!head.contains("connection: close"), "the connection is kept: {head}");
            if expected.len() <= kind {
                expected.push(body);
            } else {
                assert_eq!(body, expected[kind], "{name}'s answer is whole and the same every time");
            }
            sent += 1;
        }
        round += 1;
    }
    assert!(buffer.is_empty(), "no answer more than was asked");
    sent
}

#[tokio::test]
async fn connections_handed_between_serving_threads_lose_nothing_and_stay_open() {
    // Six clients flat out keep both cores busy for two seconds: not beside a budget-timing test.
    let _load = LOAD.lock().await;
    let sandbox = start_sandbox(agora_sandbox::Seed::Demo, 10).await;
    let projects = DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
    let options = Options { server_extra: "worker_threads = 2\nbusy_threshold = 0.0\n", ..Options::default() };
    let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, &options);
    let dir = temp_dir("handoff");
    let gateway = GatewayProcess::start(&toml, &dir, "handoff", Output::CaptureWarn).await;
    let token = token("acme", TENANT_SCOPES);

    let until = Instant::now() + Duration::from_secs(2);
    let clients: Vec<_> = (0..6).map(|_| tokio::spawn(client(gateway.base.clone(), token.clone(), until))).collect();
    let mut sent = 0;
    for client in clients {
        sent += client.await.expect("every answer as expected");
    }
    let metrics = metrics_text(&gateway.base).await;
    let moved = metric_value(&metrics, "agora_gateway_connections_moved_total");
    assert!(moved > 0, "connections moved between the threads ({sent} requests)");
    let logs = gateway.logs().await;
    assert!(!logs.contains("not between two requests"), "every hand-over was between two requests: {logs}");
    eprintln!("{sent} requests, {moved} hand-overs");
    std::fs::remove_dir_all(dir).unwrap();
}
