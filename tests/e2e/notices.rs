//! Channel state from Agora's notifications (NCS): a real gateway process receives the sandbox's
//! signed notices over HTTP — some dropped, some sent twice, some reordered — and answers channel
//! reads from them, checked against the truth the test drives; forged notices change nothing;
//! tenants stay apart; the budget holds while reconciliation polls; silence falls back to polling.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agora_sandbox::{Delivery, NotifyConfig, NotifyFaults, Sandbox, SandboxConfig, Seed};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const NCS_SECRET: &str = "e2e-ncs-secret";
/// Channel modes of the test's channels.
const COMMUNICATION: u8 = 1;
const LIVE: u8 = 2;
/// Roles, with Agora's codes.
const USER: u8 = 1;
const BROADCASTER: u8 = 2;
const AUDIENCE: u8 = 3;

/// A sandbox of the demo account that sends its notices to these gateway ports (in turn), and its
/// projects.
async fn notifying_sandbox(ports: &[u16]) -> (Sandbox, DemoProjects) {
    let notify = NotifyConfig {
        urls: ports.iter().map(|port| format!("http://127.0.0.1:{port}/agora/ncs/{{appid}}")).collect(),
        secret: NCS_SECRET.to_string(),
        ..Default::default()
    };
    let config =
        SandboxConfig { seed: Seed::Demo, notify: Some(notify), ..SandboxConfig::new(CUSTOMER_ID, CUSTOMER_SECRET) };
    let sandbox = Sandbox::start(config, any_port()).await.expect("the sandbox starts");
    let projects = DemoProjects(console_client(&sandbox).list_projects().send().await.unwrap().into_inner().projects);
    (sandbox, projects)
}

/// A sandbox that notifies a gateway process (of the acme-web and initech-staging projects), and
/// that gateway.
struct Notified {
    sandbox: Sandbox,
    gateway: GatewayProcess,
    acme: String,
    initech: String,
}

impl Notified {
    async fn start(name: &str, reconcile_every: &str, silence_after: &str) -> Self {
        Self::start_with(name, reconcile_every, silence_after, "").await
    }

    async fn start_with(name: &str, reconcile_every: &str, silence_after: &str, server_extra: &'static str) -> Self {
        let port = free_port();
        let (sandbox, projects) = notifying_sandbox(&[port]).await;
        let acme = projects.named("acme-web").vendor_key.clone();
        let initech = projects.named("initech-staging").vendor_key.clone();
        let mut sections = String::new();
        for appid in [&acme, &initech] {
            sections.push_str(&format!(
                "\n[[notifications]]\nappid = \"{appid}\"\nsecret = \"{NCS_SECRET}\"\nreconcile_every = \"{reconcile_every}\"\nsilence_after = \"{silence_after}\"\n"
            ));
        }
        let options = Options { channel_ttl: "1s", sections, server_extra, ..Options::default() };
        let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, &options);
        let gateway = GatewayProcess::spawn_on(port, &toml, &temp_dir(name), name, Output::Discard, &[], None).await;
        Notified { sandbox, gateway, acme, initech }
    }

    async fn hook(&self, path: &str, body: Value) -> Delivery {
        let response = http().post(format!("{}/__sandbox/{path}", self.sandbox.root_url())).json(&body).send().await;
        let response = response.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    async fn faults(&self, faults: NotifyFaults) {
        let url = format!("{}/__sandbox/notify", self.sandbox.root_url());
        let response = http().post(url).json(&faults).send().await.unwrap();
        assert!(response.status().is_success());
    }

    async fn read(&self, token: &str, path: &str) -> (u16, String, Value) {
        let (status, headers, body) = call_at(&self.gateway.base, Method::GET, path, Some(token), None).await;
        let x_cache = headers.get("x-cache").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (status, x_cache, body)
    }

    async fn metric(&self, series: &str) -> u64 {
        metric_value(&metrics_text(&self.gateway.base).await, series)
    }

    async fn channel_calls(&self) -> u64 {
        let stats = sandbox_stats(&self.sandbox).await;
        ["list_channel_users", "list_channel_hosts", "get_user_property", "list_channels"]
            .iter()
            .map(|operation| stats.by_operation.get(*operation).copied().unwrap_or(0))
            .sum()
    }
}

/// The channels of acme-web as the test made them (and the demo seed before it): by name, the
/// mode and the users with their roles.
struct Truth(BTreeMap<String, (u8, BTreeMap<u32, u8>)>);

impl Truth {
    /// acme-web's channels in the demo seed.
    fn seeded() -> Self {
        let users = |uids: &[u32]| uids.iter().map(|uid| (*uid, USER)).collect();
        let mut town_hall: BTreeMap<u32, u8> = (3001..3250).map(|uid| (uid, AUDIENCE)).collect();
        town_hall.insert(2001, BROADCASTER);
        Truth(BTreeMap::from([
            ("lobby".to_string(), (COMMUNICATION, users(&[1001, 1002, 1003]))),
            ("standup".to_string(), (COMMUNICATION, users(&[1001, 1004]))),
            ("town-hall".to_string(), (LIVE, town_hall)),
        ]))
    }

    fn users(&self, cname: &str) -> Value {
        let Some((mode, users)) = self.0.get(cname).filter(|(_, users)| !users.is_empty()) else {
            return json!({ "channel_exist": false });
        };
        let with = |role: u8| -> Vec<u32> { users.iter().filter(|(_, r)| **r == role).map(|(uid, _)| *uid).collect() };
        let mut data = json!({ "channel_exist": true, "mode": mode });
        let mut list = |name: &str, uids: Vec<u32>| {
            if !uids.is_empty() {
                data[name] = json!(uids);
            }
        };
        if *mode == COMMUNICATION {
            list("users", with(USER));
            data["total"] = json!(users.len());
        } else {
            list("broadcasters", with(BROADCASTER));
            list("audience", with(AUDIENCE));
            data["audience_total"] = json!(with(AUDIENCE).len());
        }
        data
    }

    fn channels(&self) -> Value {
        let channels: Vec<Value> = self
            .0
            .iter()
            .filter(|(_, (_, users))| !users.is_empty())
            .map(|(name, (_, users))| json!({ "channel_name": name, "user_count": users.len() }))
            .collect();
        json!({ "total_size": channels.len(), "channels": channels })
    }

    fn role(&self, cname: &str, uid: u32) -> Option<u8> {
        self.0.get(cname).and_then(|(_, users)| users.get(&uid).copied())
    }
}

/// An answer's `data` with its uid lists sorted (Agora lists them in no documented order).
fn normalized(body: &Value) -> Value {
    let mut data = body["data"].clone();
    for name in ["users", "broadcasters", "audience"] {
        if let Some(list) = data.get_mut(name).and_then(Value::as_array_mut) {
            list.sort_by_key(|uid| uid.as_u64());
        }
    }
    data
}

/// One random change of the channels, made at the sandbox (which notifies the gateway) and in
/// the truth; answers the channel and user it was about, and what became of its notices.
async fn change(stack: &Notified, truth: &mut Truth, rng: &mut fastrand_like::Rng) -> (String, u32, Delivery) {
    let channels = [("ncs-talk", COMMUNICATION), ("ncs-live-a", LIVE), ("ncs-live-b", LIVE)];
    let (cname, mode) = channels[rng.below(channels.len() as u64) as usize];
    let uid = 1 + rng.below(12) as u32;
    let appid = stack.acme.clone();
    let users = &mut truth.0.entry(cname.to_string()).or_insert((mode, BTreeMap::new())).1;
    let delivery = match users.get(&uid).copied() {
        Some(role) if mode == LIVE && rng.below(3) == 0 => {
            let broadcaster = role == AUDIENCE;
            users.insert(uid, if broadcaster { BROADCASTER } else { AUDIENCE });
            let body = json!({ "appid": appid, "cname": cname, "uid": uid, "broadcaster": broadcaster });
            stack.hook("channels/role", body).await
        }
        Some(_) => {
            users.remove(&uid);
            stack.hook("channels/leave", json!({ "appid": appid, "cname": cname, "uids": [uid] })).await
        }
        None => {
            let role = match mode {
                COMMUNICATION => USER,
                _ if rng.below(2) == 0 => BROADCASTER,
                _ => AUDIENCE,
            };
            users.insert(uid, role);
            let mut body = json!({ "appid": appid, "cname": cname, "mode": mode });
            let list = match role {
                USER => "users",
                BROADCASTER => "broadcasters",
                _ => "audience",
            };
            body[list] = json!([uid]);
            stack.hook("channels", body).await
        }
    };
    (cname.to_string(), uid, delivery)
}

/// The users of a channel answer (normalized), with their roles.
fn members(data: &Value) -> std::collections::BTreeSet<(u64, u8)> {
    let mut members = std::collections::BTreeSet::new();
    for (name, role) in [("users", USER), ("broadcasters", BROADCASTER), ("audience", AUDIENCE)] {
        for uid in data.get(name).and_then(Value::as_array).into_iter().flatten() {
            members.insert((uid.as_u64().unwrap(), role));
        }
    }
    members
}

/// A small seeded generator, so a failing run can be replayed.
mod fastrand_like {
    pub(super) struct Rng(u64);

    impl Rng {
        pub(super) fn new(seed: u64) -> Self {
            Rng(seed | 1)
        }

        /// xorshift64*, reduced to `0..n`.
        pub(super) fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }
}

/// Reads of every channel kind match the truth, unless a notice of that channel was lost or held
/// back less than a reconcile interval (plus slack) ago.
#[tokio::test]
async fn channel_reads_come_from_notices_spend_nothing_and_match_the_truth() {
    let _load = LOAD.lock().await;
    const RECONCILE: Duration = Duration::from_secs(2);
    // Slack for a busy machine: the poll after the interval, its slot, its answer.
    const TOLERANCE: Duration = Duration::from_secs(5);
    let stack = Notified::start("ncs-reads", "2s", "60s").await;
    let acme = token("acme", TENANT_SCOPES);
    let mut truth = Truth::seeded();
    let mut rng = fastrand_like::Rng::new(0x5eed_2026);
    // Notices start: the gateway reconciles once with Agora, then answers from them.
    change(&stack, &mut truth, &mut rng).await;
    let path = |cname: &str| format!("/dev/v1/channel/user/{}/{cname}", stack.acme);
    wait_for("reads answered from notices", async || stack.read(&acme, &path("ncs-talk")).await.1 == "EVENTS").await;
    let (_, headers, _) = call_at(&stack.gateway.base, Method::GET, &path("ncs-talk"), Some(&acme), None).await;
    assert_eq!(headers["content-type"], "application/json; charset=utf-8", "Agora's Content-Type, from its polls");
    assert_eq!(headers["cache-status"], "agora-gateway; hit; detail=events");

    stack.faults(NotifyFaults { drop: 0.1, duplicate: 0.1, reorder: 0.1, paused: false }).await;
    let (calls_before, polls_before) =
        (stack.channel_calls().await, stack.metric("agora_gateway_ncs_reconcile_polls_total").await);
    // The users whose notice was lost (or held back), by channel, and when.
    let mut unsure_since: BTreeMap<(String, u32), Instant> = BTreeMap::new();
    let (mut tolerated, mut lost, mut asked_upstream) = (0, 0, 0);
    let all = ["ncs-talk", "ncs-live-a", "ncs-live-b"];
    for i in 0..300 {
        let (cname, uid, delivery) = change(&stack, &mut truth, &mut rng).await;
        if delivery.dropped > 0 || delivery.held {
            lost += delivery.dropped;
            unsure_since.insert((cname, uid), Instant::now());
        }
        let unsure = |cname: &str, uid: u64| {
            let key = (cname.to_string(), u32::try_from(uid).unwrap());
            unsure_since.get(&key).is_some_and(|at| at.elapsed() < RECONCILE + TOLERANCE)
        };
        let read = all[i % 3];
        // Which reads may differ from the truth: those about a user whose notice was lost lately.
        let explained = |got: &Value, expected: &Value, channels: &[&str]| -> bool {
            match i % 5 {
                0 => channels.iter().any(|cname| (1..=12).any(|uid| unsure(cname, uid))),
                1 => unsure(read, 1 + (i as u64 % 12)),
                _ => members(got).symmetric_difference(&members(expected)).all(|(uid, _)| unsure(read, *uid)),
            }
        };
        let (status, x_cache, body, expected) = match i % 5 {
            0 => {
                let (status, x_cache, body) = stack.read(&acme, &format!("/dev/v1/channel/{}", stack.acme)).await;
                (status, x_cache, body["data"].clone(), truth.channels())
            }
            1 => {
                let uid = 1 + (i as u32 % 12);
                let property = format!("/dev/v1/channel/user/property/{}/{uid}/{read}", stack.acme);
                let (status, x_cache, body) = stack.read(&acme, &property).await;
                let got = json!({ "in_channel": body["data"]["in_channel"], "role": body["data"]["role"] });
                let expected = match truth.role(read, uid) {
                    Some(role) => json!({ "in_channel": true, "role": role }),
                    None => json!({ "in_channel": false, "role": null }),
                };
                (status, x_cache, got, expected)
            }
            _ => {
                let (status, x_cache, body) = stack.read(&acme, &path(read)).await;
                (status, x_cache, normalized(&body), truth.users(read))
            }
        };
        assert_eq!(status, 200, "read {i}: {body}");
        // A user whose join notice was lost is known by a poll alone until its join time is
        // learned: its property may be asked of Agora once meanwhile.
        if x_cache != "EVENTS" {
            assert!(i % 5 == 1 && explained(&body, &expected, &all), "read {i} was not answered from notices: {body}");
            asked_upstream += 1;
        }
        if body != expected {
            assert!(
                explained(&body, &expected, &all),
                "read {i}: {body} differs from the truth {expected} beyond the users whose notices were lost lately"
            );
            tolerated += 1;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    assert!(lost > 0, "the faults dropped no notice: the test proved nothing about reconciliation");
    // Every channel call that reached the sandbox was a reconciliation poll: the reads spent nothing.
    // (A poll is counted before it is sent: read after the sandbox's count, the gateway's holds
    // every poll that reached it, and perhaps one still on its way.)
    let calls = stack.channel_calls().await - calls_before;
    let polls = stack.metric("agora_gateway_ncs_reconcile_polls_total").await - polls_before;
    assert!(
        calls <= polls + asked_upstream,
        "{calls} channel calls at the sandbox, {polls} polls, {asked_upstream} asked"
    );
    let from_notices = stack.metric("agora_gateway_ncs_channel_reads_total").await;
    assert!(from_notices >= 300 - asked_upstream, "{from_notices} reads answered from notices");
    assert!(asked_upstream <= 10, "{asked_upstream} of 300 reads were asked of Agora");
    // Once notices stop being lost, the state converges on the truth within a reconcile interval.
    stack.faults(NotifyFaults::default()).await;
    for cname in ["ncs-talk", "ncs-live-a", "ncs-live-b"] {
        wait_for("the state converges", async || {
            normalized(&stack.read(&acme, &path(cname)).await.2) == truth.users(cname)
        })
        .await;
    }
    let stats = sandbox_stats(&stack.sandbox).await;
    assert!(stats.max_in_1s <= 10 && stats.throttled == 0, "the budget held: {stats:?}");
    let notices = stack.metric("agora_gateway_ncs_notices_total{result=\"duplicate\"}").await;
    assert!(notices > 0, "duplicates were answered as duplicates");
    println!(
        "300 reads: {lost} notices lost, {tolerated} reads differed while one was owed, {asked_upstream} asked of \
         Agora, {polls} reconciliation polls"
    );
}

/// Forged, unsigned, oversized and misaddressed notices are refused and change nothing; tenants
/// read only their own projects' channels; the budget holds while reconciliation polls under a
/// flood; after `silence_after` without notices, reads go back to the cache and polling.
#[tokio::test]
async fn forged_notices_change_nothing_tenants_stay_apart_and_silence_falls_back() {
    let _load = LOAD.lock().await;
    let notifications_port = free_port();
    let server_extra = format!("notifications_listen = \"127.0.0.1:{notifications_port}\"\n");
    let stack = Notified::start_with("ncs-refusals", "1s", "3s", server_extra.leak()).await;
    let (acme, initech) = (token("acme", TENANT_SCOPES), initech_token("channels:read"));
    let join = json!({ "appid": stack.acme, "cname": "ncs-room", "mode": 1, "users": [41] });
    stack.hook("channels", join).await;
    let path = format!("/dev/v1/channel/user/{}/ncs-room", stack.acme);
    wait_for("reads answered from notices", async || stack.read(&acme, &path).await.1 == "EVENTS").await;

    let forged = json!({ "noticeId": "forged-1", "productId": 1, "eventType": 107, "notifyMs": 1,
        "payload": { "channelName": "ncs-room", "uid": 666, "platform": 1, "clientSeq": 1_000_000, "ts": 1 } })
    .to_string();
    let url = format!("{}/agora/ncs/{}", stack.gateway.base, stack.acme);
    let post = |headers: Vec<(&'static str, String)>, body: String, url: String| async move {
        let mut request = http().post(url).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.headers().get("content-type").cloned(), response.text().await.unwrap())
    };
    let (_, right) = agora_sandbox::sign(NCS_SECRET, forged.as_bytes());
    let (_, wrong_key) = agora_sandbox::sign("not-the-secret", forged.as_bytes());
    for (headers, what) in [
        (vec![], "unsigned"),
        (vec![("agora-signature-v2", wrong_key.clone())], "signed with another secret"),
        (vec![("agora-signature", wrong_key[..40].to_string())], "a wrong SHA-1"),
        (vec![("agora-signature-v2", "not hex".to_string())], "not hex"),
    ] {
        let (status, content_type, body) = post(headers, forged.clone(), url.clone()).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(content_type.unwrap(), "application/problem+json");
        assert!(!body.contains(&right) && !body.contains(NCS_SECRET), "the answer gives nothing away: {body}");
    }
    // The right signature, but for a project with no [[notifications]] entry.
    let elsewhere = format!("{}/agora/ncs/{}", stack.gateway.base, "f".repeat(32));
    assert_eq!(post(vec![("agora-signature-v2", right.clone())], forged.clone(), elsewhere).await.0, 404);
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000));
    let (_, huge_signature) = agora_sandbox::sign(NCS_SECRET, huge.as_bytes());
    assert_eq!(post(vec![("agora-signature-v2", huge_signature)], huge, url.clone()).await.0, 413);
    let (status, _, body) = stack.read(&acme, &path).await;
    assert_eq!(
        (status, normalized(&body)),
        (200, json!({ "channel_exist": true, "mode": 1, "users": [41], "total": 1 }))
    );
    assert_eq!(stack.metric("agora_gateway_ncs_notices_total{result=\"refused\"}").await, 5);

    // The listener for Agora alone (`server.notifications_listen`): a notice Agora would have
    // sent (here, for a join the sandbox did not notify) is taken there, and nothing else is served.
    let agora_side = format!("http://127.0.0.1:{notifications_port}");
    stack.faults(NotifyFaults { paused: true, ..NotifyFaults::default() }).await;
    stack.hook("channels", json!({ "appid": stack.acme, "cname": "ncs-room", "mode": 1, "users": [43] })).await;
    stack.faults(NotifyFaults::default()).await;
    let notice = json!({ "noticeId": "by-hand-43", "productId": 1, "eventType": 107, "notifyMs": 1,
        "payload": { "channelName": "ncs-room", "uid": 43, "platform": 7, "clientType": 0, "clientSeq": 1_000_000_000, "ts": 1 } })
    .to_string();
    let (_, signature) = agora_sandbox::sign(NCS_SECRET, notice.as_bytes());
    let at_agora_side = format!("{agora_side}/agora/ncs/{}", stack.acme);
    let (status, _, body) =
        post(vec![("agora-signature-v2", signature.clone())], notice.clone(), at_agora_side.clone()).await;
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":true,"duplicate":false}"#));
    let (status, _, body) = post(vec![("agora-signature-v2", signature)], notice, at_agora_side).await;
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":true,"duplicate":true}"#), "the same noticeId again");
    let (status, x_cache, body) = stack.read(&acme, &path).await;
    assert_eq!((status, x_cache.as_str()), (200, "EVENTS"));
    assert_eq!(normalized(&body)["users"], json!([41, 43]));
    let console = http().get(format!("{agora_side}/dev/v1/projects")).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(console.status(), 404, "the notices' listener serves nothing else");

    // Tenants: initech cannot read acme's channels, from notices or otherwise; its own it can.
    let (status, _, _) = stack.read(&initech, &path).await;
    assert!(status == 403 || status == 404, "initech reading acme's channel: {status}");
    stack.hook("channels", json!({ "appid": stack.initech, "cname": "ncs-initech", "mode": 1, "users": [7] })).await;
    let initech_path = format!("/dev/v1/channel/user/{}/ncs-initech", stack.initech);
    wait_for("initech's reads from notices", async || stack.read(&initech, &initech_path).await.1 == "EVENTS").await;
    let (status, _, _) = stack.read(&acme, &initech_path).await;
    assert!(status == 403 || status == 404, "acme reading initech's channel: {status}");

    // A flood of reads that miss, while reconciliation polls every second: the budget holds.
    reset_sandbox(&stack.sandbox).await;
    let flood = (0..60).map(|day| {
        let acme = acme.clone();
        let base = stack.gateway.base.clone();
        async move {
            let path =
                format!("/dev/v1/usage?from_date=2026-01-{:02}&to_date=2026-01-{:02}", day % 28 + 1, day % 28 + 1);
            let _ = call_at(&base, Method::GET, &path, Some(&acme), None).await;
        }
    });
    let changes = async {
        for uid in 100..130 {
            stack
                .hook("channels", json!({ "appid": stack.acme, "cname": "ncs-room", "mode": 1, "users": [uid] }))
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::join!(futures::future::join_all(flood), changes);
    let stats = sandbox_stats(&stack.sandbox).await;
    assert!(stats.max_in_1s <= 10, "at most 10 upstream calls in any second: {stats:?}");
    assert_eq!(stats.throttled, 0, "{stats:?}");

    // Silence: no notice for `silence_after`, and reads go back to the cache and polling.
    stack.faults(NotifyFaults { paused: true, ..NotifyFaults::default() }).await;
    stack.hook("channels/leave", json!({ "appid": stack.acme, "cname": "ncs-room", "uids": [41] })).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, x_cache, body) = stack.read(&acme, &path).await;
    assert_eq!(status, 200);
    assert_ne!(x_cache, "EVENTS", "a silent project's reads are not answered from notices");
    let users = normalized(&body)["users"].clone();
    assert!(!users.as_array().unwrap().contains(&json!(41)), "the poll sees that 41 left: {body}");
}

/// Two replicas behind a "load balancer" (the sandbox sends each notice to the next in turn) share
/// Redis: every notice reaches both books, so both answer the truth from notices at once (the
/// reconciliation is a minute away). A replica cut off from Redis stops answering from notices
/// (a notice it cannot pass on is answered 503, and Agora's resending finds the other); restored,
/// it reconciles and answers from them again.
#[tokio::test]
async fn notices_reach_every_replica_and_one_cut_off_from_redis_stops_answering_from_them() {
    let _load = LOAD.lock().await;
    let Some(redis) = crate::cluster::RedisServer::start().await else { return };
    let links = [crate::fleet::RedisLink::to(&redis).await, crate::fleet::RedisLink::to(&redis).await];
    let ports = [free_port(), free_port()];
    let (sandbox, projects) = notifying_sandbox(&ports).await;
    let acme = projects.named("acme-web").vendor_key.clone();
    let sections = format!(
        "\n[[notifications]]\nappid = \"{acme}\"\nsecret = \"{NCS_SECRET}\"\nreconcile_every = \"60s\"\nsilence_after = \"60s\"\n"
    );
    let dir = temp_dir("ncs-fleet");
    let mut replicas = Vec::new();
    for (i, (port, link)) in ports.iter().zip(&links).enumerate() {
        let options = Options {
            channel_ttl: "1s",
            redis_url: Some(link.url()),
            sections: sections.clone(),
            ..Options::default()
        };
        let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, &options);
        let name = format!("replica-{i}");
        replicas.push(GatewayProcess::spawn_on(*port, &toml, &dir, &name, Output::Discard, &[], None).await);
    }
    let token = token("acme", TENANT_SCOPES);
    let path = format!("/dev/v1/channel/user/{acme}/fleet-room");
    let read = async |replica: &GatewayProcess| {
        let (status, headers, body) = call_at(&replica.base, Method::GET, &path, Some(&token), None).await;
        assert_eq!(status, 200, "{body}");
        let x_cache = headers.get("x-cache").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (x_cache, normalized(&body))
    };
    let join = |uid: u32| json!({ "appid": acme, "cname": "fleet-room", "mode": 1, "users": [uid] });
    let hook = |body: Value| {
        let url = format!("{}/__sandbox/channels", sandbox.root_url());
        async move {
            let response = http().post(url).json(&body).send().await.unwrap();
            assert!(response.status().is_success());
        }
    };
    hook(join(1)).await;
    for replica in &replicas {
        wait_for("both replicas answer from notices", async || read(replica).await.0 == "EVENTS").await;
    }
    let expect = |uids: std::ops::RangeInclusive<u32>| {
        let users: Vec<u32> = uids.collect();
        json!({ "channel_exist": true, "mode": 1, "total": users.len(), "users": users })
    };
    for uid in 2..=20 {
        hook(join(uid)).await;
    }
    // Half the notices went to each replica; each has them all.
    for replica in &replicas {
        wait_for("every notice on every replica", async || read(replica).await == ("EVENTS".into(), expect(1..=20)))
            .await;
    }

    // Replica 1 is cut off from Redis: it stops answering from notices; replica 0 takes them all.
    links[1].cut();
    wait_for("the cut-off replica stops answering from notices", async || read(&replicas[1]).await.0 != "EVENTS").await;
    for uid in 21..=30 {
        hook(join(uid)).await;
    }
    assert_eq!(read(&replicas[0]).await, ("EVENTS".into(), expect(1..=30)));
    let (x_cache, body) = read(&replicas[1]).await;
    assert_ne!(x_cache, "EVENTS");
    assert_eq!(body, expect(1..=30), "answered by a poll of Agora");
    let unrelayed =
        metric_value(&metrics_text(&replicas[1].base).await, "agora_gateway_ncs_notices_total{result=\"unrelayed\"}");
    assert!(unrelayed > 0, "the cut-off replica answered 503 to the notices it could not pass on");

    // Restored: it resubscribes, reconciles, and answers from notices again.
    links[1].restore();
    hook(join(31)).await;
    wait_for("the restored replica answers from notices", async || {
        read(&replicas[1]).await == ("EVENTS".into(), expect(1..=31))
    })
    .await;
    let stats = sandbox_stats(&sandbox).await;
    assert!(stats.max_in_1s <= 10 && stats.throttled == 0, "{stats:?}");
}

/// Agora's NCS addresses: `GET /v2/ncs/ip` is an operation at the domain's root for administrators,
/// cached; a project with `allow_agora_ips` takes notices on `server.notifications_listen` only,
/// from the addresses Agora names, and follows the list as Agora changes it.
#[tokio::test]
async fn agoras_addresses_are_an_admin_read_and_the_allow_list_of_notices() {
    let _load = LOAD.lock().await;
    let (port, notifications_port) = (free_port(), free_port());
    let (sandbox, projects) = notifying_sandbox(&[notifications_port]).await;
    let acme = projects.named("acme-web").vendor_key.clone();
    let sections = format!(
        "\n[[notifications]]\nappid = \"{acme}\"\nsecret = \"{NCS_SECRET}\"\nallow_agora_ips = true\nreconcile_every = \"60s\"\n"
    );
    let server_extra = format!("notifications_listen = \"127.0.0.1:{notifications_port}\"\n").leak();
    let options = Options { server_extra, cache_extra: "addresses_ttl = \"2s\"", sections, ..Options::default() };
    let toml = gateway_toml(&sandbox.base_url(), &projects.named("initech-staging").id, &options);
    let name = "ncs-addresses";
    let gateway = GatewayProcess::spawn_on(port, &toml, &temp_dir(name), name, Output::Discard, &[], None).await;

    // The operation: at the root, for the admin scope, cached.
    let ops = token("ops", ALL_SCOPES);
    let (status, headers, body) = call_at(&gateway.base, Method::GET, "/v2/ncs/ip", Some(&ops), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "data": { "service": { "hosts": [{ "primaryIP": "127.0.0.1" }] } } }));
    assert_eq!(headers["x-cache"], "MISS");
    let (_, headers, _) = call_at(&gateway.base, Method::GET, "/v2/ncs/ip/", Some(&ops), None).await;
    assert_eq!(headers["x-cache"], "HIT");
    let acme_token = token("acme", TENANT_SCOPES);
    let (status, _, _) = call_at(&gateway.base, Method::GET, "/v2/ncs/ip", Some(&acme_token), None).await;
    assert_eq!(status, 403, "a tenant without the admin scope");
    let (status, _, _) = call_at(&gateway.base, Method::GET, "/dev/v2/ncs/ip", Some(&ops), None).await;
    assert_eq!(status, 404, "not under /dev");

    // The sandbox's notices come from 127.0.0.1, an address Agora names: let in.
    let join = |uid: u32| json!({ "appid": acme, "cname": "ncs-allowed", "mode": 1, "users": [uid] });
    let hook = |body: Value| {
        let url = format!("{}/__sandbox/channels", sandbox.root_url());
        async move { http().post(url).json(&body).send().await.unwrap().json::<Delivery>().await.unwrap() }
    };
    let delivery = hook(join(1)).await;
    assert_eq!((delivery.delivered, delivery.dropped), (2, 0), "channel created, user joined: both let in");
    let path = format!("/dev/v1/channel/user/{acme}/ncs-allowed");
    wait_for("reads from notices", async || {
        call_at(&gateway.base, Method::GET, &path, Some(&acme_token), None)
            .await
            .1
            .get("x-cache")
            .is_some_and(|v| v == "EVENTS")
    })
    .await;
    // From another address, or on the main listener: refused.
    let notice = |id: &str| {
        let body = json!({ "noticeId": id, "productId": 1, "eventType": 107, "notifyMs": 1,
            "payload": { "channelName": "ncs-allowed", "uid": 9, "platform": 7, "clientSeq": 1, "ts": 1 } })
        .to_string();
        let (_, signature) = agora_sandbox::sign(NCS_SECRET, body.as_bytes());
        (body, signature)
    };
    let from = |local: &str, url: String, id: &str| {
        let client =
            reqwest::Client::builder().local_address(local.parse::<std::net::IpAddr>().unwrap()).build().unwrap();
        let (body, signature) = notice(id);
        async move {
            let request = client.post(url).header("agora-signature-v2", signature).body(body);
            request.send().await.unwrap().status().as_u16()
        }
    };
    let intake = format!("http://127.0.0.1:{notifications_port}/agora/ncs/{acme}");
    assert_eq!(from("127.0.0.2", intake.clone(), "from-elsewhere").await, 403);
    assert_eq!(from("127.0.0.1", format!("{}/agora/ncs/{acme}", gateway.base), "on-main").await, 403);

    // Agora's list changes: the gateway follows it (every half `addresses_ttl`).
    let url = format!("{}/__sandbox/ncs-ips", sandbox.root_url());
    assert!(http().post(url).json(&json!({ "ips": ["127.0.0.2"] })).send().await.unwrap().status().is_success());
    let mut attempt = 0;
    wait_for("the new list is followed", async || {
        attempt += 1;
        from("127.0.0.2", intake.clone(), &format!("from-the-new-address-{attempt}")).await == 200
    })
    .await;
    assert_eq!(from("127.0.0.1", intake.clone(), "from-the-old-address").await, 403);
}
