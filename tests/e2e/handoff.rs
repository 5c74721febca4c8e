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

/// Six clients flat out against `base` for two seconds, every answer checked: the requests they
/// sent, and the connections the gateway had moved between its threads by then.
async fn flat_out(base: &str) -> (usize, u64) {
    let token = token("acme", TENANT_SCOPES);
    let until = Instant::now() + Duration::from_secs(2);
    let clients: Vec<_> = (0..6).map(|_| tokio::spawn(client(base.to_string(), token.clone(), until))).collect();
    let mut sent = 0;
    for client in clients {
        sent += client.await.expect("every answer as expected");
    }
    let moved = metric_value(&metrics_text(base).await, "agora_gateway_connections_moved_total");
    (sent, moved)
}

#[tokio::test]
async fn connections_handed_between_serving_threads_lose_nothing_and_stay_open() {
    // Six clients flat out keep both cores busy for two seconds: not beside a budget-timing test.
    let _load = LOAD.lock().await;
    // Moves whatever the cores' idle time: the test's clients share the machine's two cores.
    let server_extra = "worker_threads = 2\nbusy_threshold = 0.0\nidle_to_move = 0\n";
    let options = Options { server_extra, ..Options::default() };
    let (gateway, _sandbox, dir) = demo_gateway_process("handoff", &options, Output::CaptureWarn, &[], None).await;
    let (sent, moved) = flat_out(&gateway.base).await;
    assert!(moved > 0, "connections moved between the threads ({sent} requests)");
    let logs = gateway.logs().await;
    assert!(!logs.contains("not between two requests"), "every hand-over was between two requests: {logs}");
    eprintln!("{sent} requests, {moved} hand-overs");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `server.idle_to_move` beyond any machine's cores: the cores never have the idle time for
/// another thread, so however busy a thread is (a threshold of 0), its connections stay.
#[tokio::test]
async fn a_busy_thread_keeps_its_connections_where_the_cores_have_no_idle_time_for_another() {
    let _load = LOAD.lock().await;
    let server_extra = "worker_threads = 2\nbusy_threshold = 0.0\nidle_to_move = 1024\n";
    let options = Options { server_extra, ..Options::default() };
    let (gateway, _sandbox, dir) =
        demo_gateway_process("handoff-crowded", &options, Output::CaptureWarn, &[], None).await;
    let (sent, moved) = flat_out(&gateway.base).await;
    assert_eq!(moved, 0, "no connection moved ({sent} requests)");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Requests on one keep-alive connection, each with a body (so the connection never moves), as
/// fast as they are answered until `until`.
async fn pinned_client(base: String, until: Instant) {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let _ = stream.set_nodelay(true);
    let request = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nContent-Length: 2\r\n\r\n{}";
    let mut buffer = Vec::new();
    while Instant::now() < until {
        stream.write_all(request).await.unwrap();
        let (status, head, _) = response(&mut stream, &mut buffer).await;
        assert_eq!(status, 200, "{head}");
    }
}

/// After `after`, one request, then a next request's head a byte every 100 ms: how long after the
/// answer the gateway closed the connection (None: still open after 8 s).
async fn trickler(base: String, after: Duration) -> Option<Duration> {
    tokio::time::sleep(after).await;
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let _ = stream.set_nodelay(true);
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n").await.unwrap();
    let (status, head, _) = response(&mut stream, &mut Vec::new()).await;
    assert_eq!(status, 200, "{head}");
    let idle = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let mut next: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ";
        while writer.write_all(next).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            next = b"a";
        }
    });
    let mut byte = [0u8; 1];
    let closed = match tokio::time::timeout(Duration::from_secs(8), reader.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => Some(idle.elapsed()),
        Ok(Ok(_)) => panic!("an answer to a request head that never ended"),
        Err(_) => None,
    };
    trickle.abort();
    closed
}

#[tokio::test]
async fn a_head_trickled_over_a_move_still_has_the_header_timeout_in_all() {
    let _load = LOAD.lock().await;
    let server = "worker_threads = 2\nbusy_threshold = 0.3\nidle_to_move = 0\nheader_read_timeout = \"2s\"\n";
    let options = Options { server_extra: server, ..Options::default() };
    let (gateway, _sandbox, dir) =
        demo_gateway_process("handoff-timeout", &options, Output::CaptureWarn, &[], None).await;

    // Slow clients, taken by whichever thread as they come (neither is busy); their bytes spread
    // over each 100 ms, so some come in while a thread offers a hand-over.
    let slow: Vec<_> =
        (0..16).map(|n| tokio::spawn(trickler(gateway.base.clone(), Duration::from_millis(n * 7)))).collect();
    // A second into their 2 s, a client whose connection cannot move makes the thread that takes
    // it (the first, not busy yet) busy: it hands its slow ones to the other thread.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = tokio::spawn(pinned_client(gateway.base.clone(), Instant::now() + Duration::from_secs(2)));
    let mut latest = Duration::ZERO;
    for (n, slow) in slow.into_iter().enumerate() {
        let closed = slow.await.unwrap().unwrap_or_else(|| panic!("slow connection {n} still open after 8 s"));
        latest = latest.max(closed);
    }
    busy.await.unwrap();
    let moved = metric_value(&metrics_text(&gateway.base).await, "agora_gateway_connections_moved_total");
    eprintln!("16 trickled heads, {moved} hand-overs: the last closed {latest:?} after its answer");
    assert!(moved > 0, "connections moved between the threads");
    // hyper's timer alone gives a connection moved 1 s into its 2 s another 2 s: 3 s in all.
    assert!(latest < Duration::from_millis(2600), "closed {latest:?} after the answer; header_read_timeout is 2 s");
    std::fs::remove_dir_all(dir).unwrap();
}

/// How many times each serving thread of process `pid` has gone to sleep (voluntary context
/// switches, from `/proc`), by thread id.
fn serving_thread_sleeps(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut sleeps = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        // "agora-gateway-core-N", cut to 15 bytes by the kernel.
        if !comm.starts_with("agora-gateway-c") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let count = status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or(0);
        sleeps.insert(task.file_name().to_string_lossy().into_owned(), count);
    }
    sleeps
}

#[tokio::test]
async fn an_idle_gateway_s_serving_threads_sleep_until_a_connection_comes() {
    // Idle connections close after a second, so none is left open after the requests below.
    let options = Options { server_extra: "worker_threads = 2\nheader_read_timeout = \"1s\"\n", ..Options::default() };
    let (gateway, _sandbox, dir) = demo_gateway_process("idle-threads", &options, Output::CaptureWarn, &[], None).await;
    let pid = gateway.child.id().expect("the gateway runs");
    let token = token("acme", TENANT_SCOPES);
    for _ in 0..50 {
        let response =
            http().get(format!("{}/dev/v1/projects", gateway.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), PROJECTS_OK);
    }
    // The connections close (1 s), the threads' loads fade (well under a second): then 2 s idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = serving_thread_sleeps(pid);
    assert_eq!(before.len(), 2, "two serving threads: {before:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = serving_thread_sleeps(pid);
    for (thread, count) in &after {
        let woke = count.saturating_sub(before.get(thread).copied().unwrap_or(0));
        // Measuring its load every 20 ms, a thread would wake 100 times in 2 s.
        assert!(woke <= 10, "serving thread {thread} woke {woke} times in 2 s with no connection");
    }
    // And a connection that comes is served as before.
    let response = http().get(format!("{}/dev/v1/projects", gateway.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), PROJECTS_OK);
    std::fs::remove_dir_all(dir).unwrap();
}
