//! The sandbox through the generated client, in both flavors: every operation, its documented
//! errors, Basic auth and the rate limit; and the live flavor's own shapes (201s, `project`
//! objects, Kong's `{"message"}` errors, extra fields). The generated client decodes every answer,
//! so these also prove the spec describes both.

use agora_console_client::{Client, ClientOptions, types};
use agora_sandbox::{Faults, Flavor, Sandbox, Seed};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::common::*;

const FLAVORS: [Flavor; 2] = [Flavor::Agora, Flavor::Document];

async fn create(client: &Client, name: &str, sign_key: bool) -> types::Project {
    let body: types::CreateProjectRequest = typed(json!({"name": name, "enable_sign_key": sign_key}));
    let response = client.create_project().body(body).send().await.unwrap().into_inner();
    assert_eq!(response.project.projects().len(), 1, "create answers the one project");
    response.project.projects()[0].clone()
}

/// A raw request to the sandbox with the account's credentials.
async fn raw(sandbox: &Sandbox, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request =
        http().request(method, format!("{}{path}", sandbox.base_url())).basic_auth(CUSTOMER_ID, Some(CUSTOMER_SECRET));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn basic_auth_is_required_and_checked() {
    for flavor in FLAVORS {
        let sandbox = start_flavored_sandbox(Seed::Demo, 0, flavor).await;
        let anonymous = Client::without_auth(&sandbox.base_url(), &ClientOptions::default()).unwrap();
        let wrong =
            Client::with_basic_auth(&sandbox.base_url(), CUSTOMER_ID, "not-the-secret", &ClientOptions::default())
                .unwrap();
        let (none, bad) =
            (error_of(anonymous.list_projects().send().await), error_of(wrong.list_projects().send().await));
        match flavor {
            Flavor::Agora => {
                assert_eq!(none, (401, "Unauthorized".to_string()));
                assert_eq!(bad, (401, "Invalid authentication credentials".to_string()));
            }
            Flavor::Document => assert_eq!((none.0, bad.0), (401, 401)),
        }
        assert!(console_client(&sandbox).list_projects().send().await.unwrap().status().is_success());
        let stats = sandbox_stats(&sandbox).await;
        assert_eq!((stats.requests, stats.unauthorized), (3, 2));
    }
}

#[tokio::test]
async fn the_eleventh_request_within_a_second_gets_429_and_stats_say_so() {
    for flavor in FLAVORS {
        let sandbox = start_flavored_sandbox(Seed::Demo, 10, flavor).await;
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..11 {
            let response = raw(&sandbox, reqwest::Method::GET, "/v1/projects", None).await;
            statuses.push(response.status().as_u16());
            last = Some(response);
        }
        // Eleven sequential loopback requests take far less than a second.
        assert!(statuses[..10].iter().all(|status| (200..300).contains(status)), "{statuses:?}");
        assert_eq!(statuses[10], 429);
        let throttled = last.unwrap();
        if flavor == Flavor::Agora {
            assert_eq!(throttled.headers()["retry-after"], "1");
            let body: Value = throttled.json().await.unwrap();
            assert_eq!(body, json!({"message": "API rate limit exceeded"}));
        }
        let stats = sandbox_stats(&sandbox).await;
        assert_eq!((stats.requests, stats.throttled, stats.max_in_1s), (11, 1, 11));

        reset_sandbox(&sandbox).await;
        assert_eq!(sandbox_stats(&sandbox).await, agora_sandbox::Stats::default());
    }
}

#[tokio::test]
async fn project_lifecycle() {
    for flavor in FLAVORS {
        let sandbox = start_flavored_sandbox(Seed::Empty, 0, flavor).await;
        let client = console_client(&sandbox);

        let certified = create(&client, "alpha", true).await;
        let plain = create(&client, "beta", false).await;
        assert_eq!(certified.vendor_key.len(), 32);
        assert_eq!(certified.sign_key.as_ref().map(String::len), Some(32));
        assert_eq!(plain.sign_key.as_deref(), Some(""));
        assert_eq!(certified.status, Some(1));
        let duplicate = client.create_project().body(typed::<types::CreateProjectRequest>(json!({"name": "alpha"})));
        assert_eq!(error_of(duplicate.send().await).0, 400);

        let listed = client.list_projects().send().await.unwrap().into_inner().projects;
        let ids: Vec<_> = listed.iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids, [certified.id.clone(), plain.id.clone()]);

        let by_id = client.get_project().id(&plain.id).send().await.unwrap().into_inner();
        assert_eq!(by_id.project.projects()[0].id, plain.id);
        let by_name = client.get_project().name("alpha").send().await.unwrap().into_inner();
        assert_eq!(by_name.project.projects()[0].id, certified.id);
        let mismatched = client.get_project().id(&plain.id).name("alpha").send().await;
        assert_eq!(error_of(mismatched), (404, "project not exit".to_string()));
        assert_eq!(error_of(client.get_project().send().await).0, 400);

        // Disable: the answer carries the new status; certificate and recording writes then 404.
        let status_body =
            |enabled: i64| -> types::SetProjectStatusRequest { typed(json!({"id": plain.id, "status": enabled})) };
        let disabled = client.set_project_status().body(status_body(0)).send().await.unwrap().into_inner();
        assert_eq!(disabled.project.projects()[0].status, Some(0));
        let recording = || -> types::SetRecordingConfigRequest {
            typed(json!({"id": plain.id, "recording_server": "10.12.1.5:8080"}))
        };
        assert_eq!(error_of(client.set_recording_config().body(recording()).send().await).0, 404);
        let enable = |on: bool| -> types::EnableSignKeyRequest { typed(json!({"id": plain.id, "enable": on})) };
        assert_eq!(error_of(client.enable_sign_key().body(enable(true)).send().await).0, 404);
        let reset = || -> types::ProjectIdRequest { typed(json!({"id": plain.id})) };
        assert_eq!(error_of(client.reset_sign_key().body(reset()).send().await).0, 404);

        client.set_project_status().body(status_body(1)).send().await.unwrap();
        let written = client.set_recording_config().body(recording()).send().await.unwrap().into_inner();
        let certificate = client.enable_sign_key().body(enable(true)).send().await.unwrap().into_inner();
        match flavor {
            Flavor::Document => {
                assert_eq!((written.success, certificate.success), (Some(true), Some(true)));
            }
            Flavor::Agora => {
                let project = written.project.expect("live, the project");
                assert_eq!(project.projects()[0].recording_server.as_deref(), Some("10.12.1.5:8080"));
                assert_eq!(certificate.project.unwrap().projects()[0].sign_key.as_ref().map(String::len), Some(32));
            }
        }
        let enabled = client.get_project().id(&plain.id).send().await.unwrap().into_inner();
        let enabled = &enabled.project.projects()[0];
        assert_eq!(enabled.recording_server.as_deref(), Some("10.12.1.5:8080"));
        let first_key = enabled.sign_key.clone().unwrap();
        assert_eq!(first_key.len(), 32);
        client.reset_sign_key().body(reset()).send().await.unwrap();
        let reset_key = client.get_project().id(&plain.id).send().await.unwrap().into_inner();
        assert_ne!(reset_key.project.projects()[0].sign_key.as_deref(), Some(first_key.as_str()));

        let delete = || -> types::ProjectIdRequest { typed(json!({"id": plain.id})) };
        assert!(client.delete_project().body(delete()).send().await.unwrap().into_inner().success);
        assert_eq!(
            error_of(client.delete_project().body(delete()).send().await),
            (404, "project not exit".to_string())
        );
        assert_eq!(error_of(client.set_project_status().body(status_body(1)).send().await).0, 404);
        let left = client.list_projects().send().await.unwrap().into_inner().projects;
        assert_eq!(left.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [certified.id.as_str()]);
    }
}

#[tokio::test]
async fn the_live_flavor_answers_as_the_live_service() {
    let sandbox = start_flavored_sandbox(Seed::Empty, 0, Flavor::Agora).await;
    // Project operations: 201; writes answer `project` as an object; `company_id` everywhere; a
    // create answer has no `recording_server`; lists say `null` for none.
    let created = raw(&sandbox, reqwest::Method::POST, "/v1/project", Some(json!({"name": "live"}))).await;
    assert_eq!(created.status(), 201);
    assert!(created.headers()["x-request-id"].to_str().unwrap().len() == 32);
    let created: Value = created.json().await.unwrap();
    let project = &created["project"];
    assert!(project.is_object(), "{created}");
    assert!(project.get("recording_server").is_none() && project["company_id"].is_i64(), "{created}");
    let id = project["id"].as_str().unwrap().to_string();
    let app = project["vendor_key"].as_str().unwrap().to_string();
    let listed: Value = raw(&sandbox, reqwest::Method::GET, "/v1/projects", None).await.json().await.unwrap();
    assert_eq!(listed["projects"][0]["recording_server"], Value::Null);
    assert_eq!(listed["projects"][0]["sign_key"], "");
    assert!(listed["projects"][0]["created"].as_i64().unwrap() > 1_000_000_000_000, "13-digit milliseconds");
    let reset = raw(&sandbox, reqwest::Method::POST, "/v1/reset_signkey", Some(json!({"id": id}))).await;
    assert_eq!(reset.status(), 201);
    let reset: Value = reset.json().await.unwrap();
    assert_eq!(reset["project"]["sign_key"].as_str().map(str::len), Some(32));

    // The edge's errors.
    let nowhere = raw(&sandbox, reqwest::Method::GET, "/v1/nothing", None).await;
    assert_eq!(nowhere.status(), 404);
    assert_eq!(nowhere.json::<Value>().await.unwrap(), json!({"message": "no Route matched with those values"}));
    let wrong_method = raw(&sandbox, reqwest::Method::PATCH, "/v1/projects", None).await;
    assert_eq!(wrong_method.status(), 404, "no 405 at Kong");
    let anonymous = http().get(format!("{}/v1/projects", sandbox.base_url())).send().await.unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], "Basic realm=\"kong\"");
    let invalid = raw(&sandbox, reqwest::Method::GET, "/v1/channel/user/not-an-app/lobby", None).await;
    assert_eq!(
        (invalid.status().as_u16(), invalid.json::<Value>().await.unwrap()),
        (400, json!({"message": "invalid appid"}))
    );

    // Channel answers: a `request_id`; an unknown App ID is a channel nobody is in.
    let unknown = format!("/v1/channel/user/{}/lobby", "a".repeat(32));
    let unknown: Value = raw(&sandbox, reqwest::Method::GET, &unknown, None).await.json().await.unwrap();
    assert_eq!(unknown["data"], json!({"channel_exist": false}));
    assert_eq!(unknown["request_id"].as_str().map(str::len), Some(32));
    // User state: `uid` and `platform`; an absent user is `in_channel: false` alone.
    join_channel(&sandbox, json!({"appid": app, "cname": "talk", "mode": 1, "users": [3_000_000_000_u32]})).await;
    let here: Value =
        raw(&sandbox, reqwest::Method::GET, &format!("/v1/channel/user/property/{app}/3000000000/talk"), None)
            .await
            .json()
            .await
            .unwrap();
    assert_eq!((here["data"]["uid"].as_u64(), here["data"]["in_channel"].as_bool()), (Some(3_000_000_000), Some(true)));
    assert!(here["data"]["platform"].is_i64());
    let away: Value = raw(&sandbox, reqwest::Method::GET, &format!("/v1/channel/user/property/{app}/7/talk"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(away["data"], json!({"in_channel": false}));

    // Kicking rules: time 0 answers id 0; no time means 60 minutes; fractions of a minute are one.
    let once: Value =
        raw(&sandbox, reqwest::Method::POST, "/v1/kicking-rule", Some(json!({"appid": app, "uid": 5, "time": 0})))
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(once, json!({"status": "success", "id": 0}));
    for (time, minutes) in [(None, 60), (Some(json!(0.5)), 1)] {
        let mut body = json!({"appid": app, "cname": format!("ban-{minutes}")});
        if let Some(time) = time {
            body["time"] = time;
        }
        let response = raw(&sandbox, reqwest::Method::POST, "/v1/kicking-rule", Some(body)).await;
        assert_eq!(response.status(), 200);
        let rules: types::KickingRuleList =
            raw(&sandbox, reqwest::Method::GET, &format!("/v1/kicking-rule?appid={app}"), None)
                .await
                .json()
                .await
                .unwrap();
        let rule = rules.rules.iter().find(|r| r.cname.as_deref() == Some(&format!("ban-{minutes}"))).unwrap();
        let expiry: chrono::DateTime<Utc> = rule.ts.as_ref().unwrap().parse().unwrap();
        let left = (expiry - Utc::now()).num_seconds();
        assert!((minutes * 60 - 5..=minutes * 60).contains(&left), "{minutes} minutes: {left} s left");
    }
}

#[tokio::test]
async fn usage_v1_and_v3() {
    let sandbox = start_sandbox(Seed::Demo, 0).await;
    let client = console_client(&sandbox);
    let projects = client.list_projects().send().await.unwrap().into_inner().projects;
    let today = Utc::now().date_naive();
    let (from, to) = (today - Duration::days(10), today - Duration::days(1));

    let all = client.get_usage().from_date(from).to_date(to).send().await.unwrap().into_inner();
    assert_eq!(all.usages.len(), projects.len(), "no projects: all of them");
    assert!(all.usages.iter().all(|usage| usage.daily.len() == 10));
    let first_day: i32 = from.format("%Y%m%d").to_string().parse().unwrap();
    assert_eq!(all.usages[0].daily[0].date, first_day);

    let wanted = format!("{},no-such-project", projects[1].id);
    let some = client.get_usage().from_date(from).to_date(to).projects(wanted).send().await.unwrap().into_inner();
    assert_eq!(some.usages.len(), 1, "unknown projects are ignored");
    assert_eq!(some.usages[0], all.usages[1], "figures are deterministic");

    let too_long = client.get_usage().from_date(to - Duration::days(400)).to_date(to).send().await;
    assert_eq!(error_of(too_long).0, 400);
    let reversed = client.get_usage().from_date(to).to_date(from).send().await;
    assert_eq!(error_of(reversed).0, 400);

    let v3 = client.get_usage_v3().from_date(from).to_date(to).project_id(&projects[0].id).send().await.unwrap();
    let v3 = v3.into_inner();
    let names: Vec<_> = v3.meta.keys().cloned().collect();
    assert_eq!(names, ["durationAudioAll", "durationVideoHd", "durationVideoHdp"]);
    assert_eq!(v3.usages.len(), 10);
    assert!(v3.usages[0].date.ends_with("T00:00:00.000Z"));
    let cloud = client
        .get_usage_v3()
        .from_date(from)
        .to_date(to)
        .project_id(&projects[0].id)
        .business(types::UsageBusiness::CloudRecording)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert!(cloud.meta.keys().all(|name| name.starts_with("cloudRecording")));
    let missing = client.get_usage_v3().from_date(from).to_date(to).project_id("no-such-project").send().await;
    assert_eq!(error_of(missing), (404, "project not exit".to_string()));
}

async fn demo_app(client: &Client, name: &str) -> String {
    let projects = client.list_projects().send().await.unwrap().into_inner().projects;
    projects.into_iter().find(|p| p.name == name).expect("a demo project").vendor_key
}

#[tokio::test]
async fn kicking_rules() {
    let sandbox = start_flavored_sandbox(Seed::Demo, 0, Flavor::Document).await;
    let client = console_client(&sandbox);
    let app = demo_app(&client, "acme-web").await;
    let before = client.list_kicking_rules().appid(&app).send().await.unwrap().into_inner().rules;

    let rule = |cname: Option<&str>, uid: Option<u32>, time: i32| -> types::CreateKickingRuleRequest {
        typed(json!({"appid": app, "cname": cname, "uid": uid, "time": time, "privileges": ["join_channel"]}))
    };
    let created = client.create_kicking_rule().body(rule(Some("lobby"), Some(1002), 60)).send().await.unwrap();
    let created = created.into_inner();
    assert_eq!(created.status.as_deref(), Some("success"));
    let users = client.list_channel_users().appid(&app).cname("lobby").send().await.unwrap().into_inner();
    assert_eq!(users.data.users, vec![1001, 1003], "the banned user was kicked out");

    let rules = client.list_kicking_rules().appid(&app).send().await.unwrap().into_inner().rules;
    assert_eq!(rules.len(), before.len() + 1);
    let listed = rules.iter().find(|r| r.id == created.id).unwrap();
    assert_eq!((listed.cname.as_deref(), listed.uid, listed.ip.as_deref()), (Some("lobby"), Some(1002), None));

    let update = |id: i64, time: i32| -> types::UpdateKickingRuleRequest {
        typed(json!({"appid": app, "id": id, "time": time}))
    };
    let updated = client.update_kicking_rule().body(update(created.id, 5000)).send().await.unwrap().into_inner();
    let expiry: chrono::DateTime<Utc> = updated.result.ts.unwrap().parse().unwrap();
    let minutes = (expiry - Utc::now()).num_minutes();
    assert!((1438..=1440).contains(&minutes), "clamped to 1440 minutes, got {minutes}");

    let delete = || -> types::DeleteKickingRuleRequest { typed(json!({"appid": app, "id": created.id})) };
    assert_eq!(client.delete_kicking_rule().body(delete()).send().await.unwrap().into_inner().id, created.id);
    assert_eq!(error_of(client.delete_kicking_rule().body(delete()).send().await).0, 404);
    assert_eq!(error_of(client.update_kicking_rule().body(update(created.id, 5)).send().await).0, 404);

    // The documented refusals, and the sandbox's own (a rule with no filter).
    assert_eq!(error_of(client.create_kicking_rule().body(rule(Some(""), None, 60)).send().await).0, 400);
    assert_eq!(error_of(client.create_kicking_rule().body(rule(None, Some(0), 60)).send().await).0, 400);
    assert_eq!(error_of(client.create_kicking_rule().body(rule(None, None, 60)).send().await).0, 400);
    let elsewhere: types::CreateKickingRuleRequest = typed(json!({"appid": "0".repeat(32), "cname": "lobby"}));
    assert_eq!(error_of(client.create_kicking_rule().body(elsewhere).send().await), (404, "project not exit".into()));

    // time 0 kicks once: the rule is made but is never in force.
    let once = client.create_kicking_rule().body(rule(Some("standup"), None, 0)).send().await.unwrap().into_inner();
    assert!(once.id > created.id, "rule ids increase");
    let rules = client.list_kicking_rules().appid(&app).send().await.unwrap().into_inner().rules;
    assert!(rules.iter().all(|r| r.id != once.id));
    let standup = client.list_channel_users().appid(&app).cname("standup").send().await.unwrap().into_inner();
    assert!(!standup.data.channel_exist, "everyone was kicked out once");
}

#[tokio::test]
async fn agoras_own_kicking_rule_example_with_empty_uid_and_ip_is_accepted() {
    let sandbox = start_sandbox(Seed::Demo, 0).await;
    let app = demo_app(&console_client(&sandbox), "acme-web").await;
    let example =
        json!({"appid": app, "cname": "channel1", "uid": "", "ip": "", "time": 60, "privileges": ["join_channel"]});
    let response = raw(&sandbox, reqwest::Method::POST, "/v1/kicking-rule", Some(example)).await;
    assert_eq!(response.status(), 200);
    let created: types::KickingRuleCreated = response.json().await.unwrap();
    assert_eq!(created.status.as_deref(), Some("success"));
}

#[tokio::test]
async fn channel_queries() {
    for flavor in FLAVORS {
        let sandbox = start_flavored_sandbox(Seed::Empty, 0, flavor).await;
        let client = console_client(&sandbox);
        let app = create(&client, "channels", false).await.vendor_key;
        join_channel(&sandbox, json!({"appid": app, "cname": "talk", "mode": 1, "users": [11, 12]})).await;
        join_channel(
            &sandbox,
            json!({"appid": app, "cname": "stage", "mode": 2, "broadcasters": [21], "audience": [31], "extra_audience": 10_050}),
        )
        .await;

        let talk = client.list_channel_users().appid(&app).cname("talk").send().await.unwrap().into_inner();
        assert!(talk.success && talk.data.channel_exist);
        assert_eq!((talk.data.mode, talk.data.total), (Some(1), Some(2)));
        assert_eq!(talk.data.users, vec![11, 12]);
        assert_eq!(talk.request_id.is_some(), flavor == Flavor::Agora);

        let stage = client.list_channel_users().appid(&app).cname("stage").send().await.unwrap().into_inner().data;
        assert_eq!(stage.mode, Some(2));
        assert_eq!(stage.broadcasters, vec![21]);
        assert_eq!(stage.audience.len(), agora_console_client::rules::MAX_AUDIENCE_LISTED);
        assert_eq!(stage.audience_total, Some(10_051));

        let nowhere = client.list_channel_users().appid(&app).cname("nowhere").send().await.unwrap().into_inner().data;
        assert!(!nowhere.channel_exist);

        // Hosts only: a live channel's broadcasters; a communication channel's mode alone.
        let hosts = client.list_channel_hosts().appid(&app).cname("stage").send().await.unwrap().into_inner().data;
        assert_eq!((hosts.mode, hosts.broadcasters, hosts.audience.len()), (Some(2), vec![21], 0));
        let talk_hosts = client.list_channel_hosts().appid(&app).cname("talk").send().await.unwrap().into_inner().data;
        assert_eq!((talk_hosts.mode, talk_hosts.users.len()), (Some(1), 0));
        let no_hosts = client.list_channel_hosts().appid(&app).cname("nowhere").send().await.unwrap().into_inner().data;
        assert!(!no_hosts.channel_exist);

        let broadcaster = client.get_user_property().appid(&app).uid(21u32).cname("stage").send().await.unwrap();
        let broadcaster = broadcaster.into_inner().data;
        assert!(broadcaster.in_channel);
        assert_eq!(broadcaster.role, Some(2));
        assert!(broadcaster.join.unwrap() > 0);
        assert_eq!(broadcaster.uid.is_some(), flavor == Flavor::Agora);
        let audience = client.get_user_property().appid(&app).uid(31u32).cname("stage").send().await.unwrap();
        assert_eq!(audience.into_inner().data.role, Some(3));
        let absent = client.get_user_property().appid(&app).uid(99u32).cname("talk").send().await.unwrap().into_inner();
        assert!(!absent.data.in_channel);

        for n in 0..5 {
            join_channel(&sandbox, json!({"appid": app, "cname": format!("extra-{n}"), "mode": 1, "users": [40 + n]}))
                .await;
        }
        let page = client.list_channels().appid(&app).page_no(1u32).page_size(3u32).send().await.unwrap().into_inner();
        assert_eq!(page.data.total_size, Some(7));
        let names: Vec<_> = page.data.channels.iter().map(|c| c.channel_name.as_str()).collect();
        assert_eq!(names, ["extra-3", "extra-4", "stage"]);
        let first = client.list_channels().appid(&app).send().await.unwrap().into_inner().data;
        assert_eq!(first.channels.len(), 7, "page 0 of 100 by default");
        assert_eq!(first.channels.iter().find(|c| c.channel_name == "stage").unwrap().user_count, Some(10_052));
        assert_eq!(error_of(client.list_channels().appid(&app).page_size(501u32).send().await).0, 400);
        let unknown = client.list_channels().appid("f".repeat(32)).send().await;
        match flavor {
            Flavor::Document => assert_eq!(error_of(unknown).0, 404),
            Flavor::Agora => assert!(unknown.unwrap().into_inner().data.channels.is_empty()),
        }
    }
}

#[tokio::test]
async fn paths_with_a_trailing_slash_are_served_too() {
    let sandbox = start_sandbox(Seed::Demo, 0).await;
    for path in ["/v1/projects", "/v1/projects/"] {
        let response = raw(&sandbox, reqwest::Method::GET, path, None).await;
        assert!(response.status().is_success(), "{path}");
        let body: types::ProjectList = response.json().await.unwrap();
        assert_eq!(body.projects.len(), 5);
    }
}

#[tokio::test]
async fn injected_faults_fail_and_delay_answers() {
    let sandbox = start_sandbox(Seed::Demo, 0).await;
    let client = console_client(&sandbox);
    set_faults(&sandbox, Faults { fail_rate: 1.0, status: Some(500), ..Default::default() }).await;
    assert_eq!(error_of(client.list_projects().send().await), (500, "fault injected by the sandbox".to_string()));

    // A fault can answer any status and body, on one path, a number of times.
    let faults = Faults {
        fail_rate: 1.0,
        status: Some(429),
        body: Some(r#"{"message":"API rate limit exceeded"}"#.into()),
        headers: [("retry-after".to_string(), "2".to_string())].into(),
        path: Some("/dev/v1/projects".into()),
        times: Some(1),
        ..Default::default()
    };
    set_faults(&sandbox, faults).await;
    let limited = raw(&sandbox, reqwest::Method::GET, "/v1/projects", None).await;
    assert_eq!((limited.status().as_u16(), limited.headers()["retry-after"].to_str().unwrap()), (429, "2"));
    assert_eq!(limited.text().await.unwrap(), r#"{"message":"API rate limit exceeded"}"#);
    assert!(raw(&sandbox, reqwest::Method::GET, "/v1/projects", None).await.status().is_success(), "only once");

    set_faults(&sandbox, Faults { latency_ms: 300, ..Default::default() }).await;
    let started = std::time::Instant::now();
    client.list_projects().send().await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "latency is added, never removed");

    let refused = http()
        .post(format!("{}/__sandbox/faults", sandbox.root_url()))
        .json(&json!({"fail_rate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn a_stopped_sandbox_refuses_connections() {
    let sandbox: Sandbox = start_sandbox(Seed::Demo, 0).await;
    let client = console_client(&sandbox);
    client.list_projects().send().await.unwrap();
    sandbox.stop().await;
    match client.list_projects().send().await {
        Err(agora_console_client::Error::CommunicationError(_)) => {}
        other => panic!("expected a connection error, got {other:?}"),
    }
}
