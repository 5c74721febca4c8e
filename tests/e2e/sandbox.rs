//! The sandbox through the generated client: every operation, its documented errors, Basic auth and
//! the rate limit. The generated client decodes every answer, so these also prove the sandbox speaks the spec.

use agora_console_client::{Client, ClientOptions, types};
use agora_sandbox::{Faults, Sandbox, Seed};
use chrono::{Duration, Utc};
use serde_json::json;

use crate::common::*;

async fn create(client: &Client, name: &str, sign_key: bool) -> types::Project {
    let body = types::CreateProjectRequest { name: name.into(), enable_sign_key: sign_key };
    let mut response = client.create_project().body(body).send().await.unwrap().into_inner();
    assert_eq!(response.project.len(), 1, "create answers the one project");
    response.project.remove(0)
}

fn status(project: &types::Project) -> i64 {
    *project.status
}

#[tokio::test]
async fn basic_auth_is_required_and_checked() {
    let sandbox = start_sandbox(Seed::Demo, 0).await;
    let anonymous = Client::without_auth(&sandbox.base_url(), &ClientOptions::default()).unwrap();
    assert_eq!(error_of(anonymous.list_projects().send().await).0, 401);
    let wrong =
        Client::with_basic_auth(&sandbox.base_url(), CUSTOMER_ID, "not-the-secret", &ClientOptions::default()).unwrap();
    assert_eq!(error_of(wrong.list_projects().send().await).0, 401);
    assert_eq!(console_client(&sandbox).list_projects().send().await.unwrap().status(), 200);
    let stats = sandbox_stats(&sandbox).await;
    assert_eq!((stats.requests, stats.unauthorized), (3, 2));
}

#[tokio::test]
async fn the_eleventh_request_within_a_second_gets_429_and_stats_say_so() {
    let sandbox = start_sandbox(Seed::Demo, 10).await;
    let client = console_client(&sandbox);
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(match client.list_projects().send().await {
            Ok(response) => response.status().as_u16(),
            Err(error) => error_of::<()>(Err(error)).0,
        });
    }
    // Eleven sequential loopback requests take far less than a second.
    assert_eq!(&statuses[..10], &[200; 10]);
    assert_eq!(statuses[10], 429);
    let stats = sandbox_stats(&sandbox).await;
    assert_eq!((stats.requests, stats.throttled, stats.max_in_1s), (11, 1, 11));

    reset_sandbox(&sandbox).await;
    assert_eq!(sandbox_stats(&sandbox).await, agora_sandbox::Stats::default());
}

#[tokio::test]
async fn project_lifecycle() {
    let sandbox = start_sandbox(Seed::Empty, 0).await;
    let client = console_client(&sandbox);

    let certified = create(&client, "alpha", true).await;
    let plain = create(&client, "beta", false).await;
    assert_eq!(certified.vendor_key.len(), 32);
    assert_eq!(certified.sign_key.as_ref().map(String::len), Some(32));
    assert_eq!(plain.sign_key.as_deref(), Some(""));
    assert_eq!(status(&certified), 1);
    let duplicate = client
        .create_project()
        .body(types::CreateProjectRequest { name: "alpha".into(), enable_sign_key: false })
        .send()
        .await;
    assert_eq!(error_of(duplicate).0, 400);

    let listed = client.list_projects().send().await.unwrap().into_inner().projects;
    assert_eq!(listed, vec![certified.clone(), plain.clone()]);

    let by_id = client.get_project().id(&plain.id).send().await.unwrap().into_inner();
    assert_eq!(by_id.project, vec![plain.clone()]);
    let by_name = client.get_project().name("alpha").send().await.unwrap().into_inner();
    assert_eq!(by_name.project, vec![certified.clone()]);
    let mismatched = client.get_project().id(&plain.id).name("alpha").send().await;
    assert_eq!(error_of(mismatched), (404, "project not exit".to_string()));
    assert_eq!(error_of(client.get_project().send().await).0, 400);

    // Disable: the answer carries the new status; certificate and recording writes then 404.
    let status_body = |enabled: i64| types::SetProjectStatusRequest {
        id: plain.id.clone(),
        status: types::ProjectStatus::try_from(enabled).unwrap(),
    };
    let disabled = client.set_project_status().body(status_body(0)).send().await.unwrap().into_inner();
    assert_eq!(status(&disabled.project[0]), 0);
    let recording =
        |id: &str| types::SetRecordingConfigRequest { id: id.into(), recording_server: "10.12.1.5:8080".into() };
    assert_eq!(error_of(client.set_recording_config().body(recording(&plain.id)).send().await).0, 404);
    let enable = |on: bool| types::EnableSignKeyRequest { id: plain.id.clone(), enable: on };
    assert_eq!(error_of(client.enable_sign_key().body(enable(true)).send().await).0, 404);
    let reset = types::ProjectIdRequest { id: plain.id.clone() };
    assert_eq!(error_of(client.reset_sign_key().body(reset.clone()).send().await).0, 404);

    client.set_project_status().body(status_body(1)).send().await.unwrap();
    assert!(client.set_recording_config().body(recording(&plain.id)).send().await.unwrap().into_inner().success);
    assert!(client.enable_sign_key().body(enable(true)).send().await.unwrap().into_inner().success);
    let enabled = client.get_project().id(&plain.id).send().await.unwrap().into_inner().project.remove(0);
    assert_eq!(enabled.recording_server.as_deref(), Some("10.12.1.5:8080"));
    let first_key = enabled.sign_key.clone().unwrap();
    assert_eq!(first_key.len(), 32);
    assert!(client.reset_sign_key().body(reset).send().await.unwrap().into_inner().success);
    let reset_key = client.get_project().id(&plain.id).send().await.unwrap().into_inner().project[0].sign_key.clone();
    assert_ne!(reset_key.as_deref(), Some(first_key.as_str()));

    let delete = types::ProjectIdRequest { id: plain.id.clone() };
    assert!(client.delete_project().body(delete.clone()).send().await.unwrap().into_inner().success);
    assert_eq!(error_of(client.delete_project().body(delete).send().await), (404, "project not exit".to_string()));
    assert_eq!(error_of(client.set_project_status().body(status_body(1)).send().await).0, 404);
    assert_eq!(client.list_projects().send().await.unwrap().into_inner().projects, vec![certified]);
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
    let sandbox = start_sandbox(Seed::Demo, 0).await;
    let client = console_client(&sandbox);
    let app = demo_app(&client, "acme-web").await;
    let before = client.list_kicking_rules().appid(&app).send().await.unwrap().into_inner().rules;

    let rule = |cname: Option<&str>, uid: Option<u32>, time: i32| types::CreateKickingRuleRequest {
        appid: app.clone(),
        cname: cname.map(str::to_string),
        uid,
        ip: None,
        time,
        privileges: vec!["join_channel".into()],
    };
    let created = client.create_kicking_rule().body(rule(Some("lobby"), Some(1002), 60)).send().await.unwrap();
    let created = created.into_inner();
    assert_eq!(created.status, "success");
    let users = client.list_channel_users().appid(&app).cname("lobby").send().await.unwrap().into_inner();
    assert_eq!(users.data.users, vec![1001, 1003], "the banned user was kicked out");

    let rules = client.list_kicking_rules().appid(&app).send().await.unwrap().into_inner().rules;
    assert_eq!(rules.len(), before.len() + 1);
    let listed = rules.iter().find(|r| r.id == created.id).unwrap();
    assert_eq!((listed.cname.as_deref(), listed.uid, listed.ip.as_deref()), (Some("lobby"), Some(1002), None));

    let update = types::UpdateKickingRuleRequest { appid: app.clone(), id: created.id, time: 5000 };
    let updated = client.update_kicking_rule().body(update).send().await.unwrap().into_inner();
    let expiry: chrono::DateTime<Utc> = updated.result.ts.parse().unwrap();
    let hours = (expiry - Utc::now()).num_minutes();
    assert!((1438..=1440).contains(&hours), "clamped to 1440 minutes, got {hours}");

    let delete = types::DeleteKickingRuleRequest { appid: app.clone(), id: created.id };
    assert_eq!(client.delete_kicking_rule().body(delete.clone()).send().await.unwrap().into_inner().id, created.id);
    assert_eq!(error_of(client.delete_kicking_rule().body(delete).send().await).0, 404);
    let gone = types::UpdateKickingRuleRequest { appid: app.clone(), id: created.id, time: 5 };
    assert_eq!(error_of(client.update_kicking_rule().body(gone).send().await).0, 404);

    // The documented refusals.
    assert_eq!(error_of(client.create_kicking_rule().body(rule(Some(""), None, 60)).send().await).0, 400);
    assert_eq!(error_of(client.create_kicking_rule().body(rule(None, Some(0), 60)).send().await).0, 400);
    assert_eq!(error_of(client.create_kicking_rule().body(rule(None, None, 60)).send().await).0, 400);
    let elsewhere = types::CreateKickingRuleRequest { appid: "0".repeat(32), ..rule(Some("lobby"), None, 60) };
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
    let response = http()
        .post(format!("{}/v1/kicking-rule", sandbox.base_url()))
        .basic_auth(CUSTOMER_ID, Some(CUSTOMER_SECRET))
        .json(&json!({"appid": app, "cname": "channel1", "uid": "", "ip": "", "time": 60, "privileges": ["join_channel"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let created: types::KickingRuleCreated = response.json().await.unwrap();
    assert_eq!(created.status, "success");
}

#[tokio::test]
async fn channel_queries() {
    let sandbox = start_sandbox(Seed::Empty, 0).await;
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
    assert_eq!((talk.data.mode.as_deref(), talk.data.total), (Some(&1), Some(2)));
    assert_eq!(talk.data.users, vec![11, 12]);

    let stage = client.list_channel_users().appid(&app).cname("stage").send().await.unwrap().into_inner().data;
    assert_eq!(stage.mode.as_deref(), Some(&2));
    assert_eq!(stage.broadcasters, vec![21]);
    assert_eq!(stage.audience.len(), agora_console_client::rules::MAX_AUDIENCE_LISTED);
    assert_eq!(stage.audience_total, Some(10_051));

    let nowhere = client.list_channel_users().appid(&app).cname("nowhere").send().await.unwrap().into_inner().data;
    assert!(!nowhere.channel_exist);

    let broadcaster = client.get_user_property().appid(&app).uid(21u32).cname("stage").send().await.unwrap();
    let broadcaster = broadcaster.into_inner().data;
    assert!(broadcaster.in_channel);
    assert_eq!(*broadcaster.role, 2);
    assert!(broadcaster.join > 0);
    let audience = client.get_user_property().appid(&app).uid(31u32).cname("stage").send().await.unwrap();
    assert_eq!(*audience.into_inner().data.role, 3);
    let absent = client.get_user_property().appid(&app).uid(99u32).cname("talk").send().await.unwrap().into_inner();
    assert!(!absent.data.in_channel);
    assert_eq!(error_of(client.get_user_property().appid(&app).uid(0u32).cname("talk").send().await).0, 400);

    for n in 0..5 {
        join_channel(&sandbox, json!({"appid": app, "cname": format!("extra-{n}"), "mode": 1, "users": [40 + n]}))
            .await;
    }
    let page = client.list_channels().appid(&app).page_no(1u32).page_size(3u32).send().await.unwrap().into_inner();
    assert_eq!(page.data.total_size, 7);
    let names: Vec<_> = page.data.channels.iter().map(|c| c.channel_name.as_str()).collect();
    assert_eq!(names, ["extra-3", "extra-4", "stage"]);
    let first = client.list_channels().appid(&app).send().await.unwrap().into_inner().data;
    assert_eq!(first.channels.len(), 7, "page 0 of 100 by default");
    assert_eq!(first.channels.iter().find(|c| c.channel_name == "stage").unwrap().user_count, 10_052);
    assert_eq!(error_of(client.list_channels().appid(&app).page_size(501u32).send().await).0, 400);
    assert_eq!(error_of(client.list_channels().appid("f".repeat(32)).send().await).0, 404);
}

#[tokio::test]
async fn paths_with_a_trailing_slash_are_served_too() {
    let sandbox = start_sandbox(Seed::Demo, 0).await;
    for path in ["/v1/projects", "/v1/projects/"] {
        let response = http()
            .get(format!("{}{path}", sandbox.base_url()))
            .basic_auth(CUSTOMER_ID, Some(CUSTOMER_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: types::ProjectList = response.json().await.unwrap();
        assert_eq!(body.projects.len(), 5);
    }
}

#[tokio::test]
async fn injected_faults_fail_and_delay_answers() {
    let sandbox = start_sandbox(Seed::Demo, 0).await;
    let client = console_client(&sandbox);
    set_faults(&sandbox, Faults { fail_rate: 1.0, status: Some(500), latency_ms: 0 }).await;
    assert_eq!(error_of(client.list_projects().send().await), (500, "fault injected by the sandbox".to_string()));

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
