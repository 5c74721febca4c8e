//! The Console account's rules, without HTTP.

use agora_console_client::rules::MAX_AUDIENCE_LISTED;
use chrono::Duration;

use super::*;

fn now() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

#[test]
fn projects_get_32_hex_app_ids_and_certificates_only_when_asked() {
    let mut world = World::new(7);
    let with = world.create_project("a", true, now()).unwrap();
    let without = world.create_project("b", false, now()).unwrap();
    for key in [&with.vendor_key, with.sign_key.as_ref().unwrap()] {
        assert_eq!(key.len(), 32);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
    }
    assert_eq!(without.sign_key.as_deref(), Some(""));
    assert_ne!(with.vendor_key, without.vendor_key);
    assert_eq!(with.created, Some(now().timestamp_millis()));
    assert!(world.create_project("a", false, now()).is_err(), "names are unique");
}

#[test]
fn disabled_projects_refuse_certificate_and_recording_writes() {
    let mut world = World::new(7);
    let project = world.create_project("a", false, now()).unwrap();
    world.set_project_status(&project.id, false).unwrap();
    assert_eq!(world.enable_sign_key(&project.id, true), Err(ApiError::project_not_found()));
    assert_eq!(world.reset_sign_key(&project.id), Err(ApiError::project_not_found()));
    assert_eq!(world.set_recording_config(&project.id, "10.0.0.1:8080"), Err(ApiError::project_not_found()));
    world.set_project_status(&project.id, true).unwrap();
    world.enable_sign_key(&project.id, true).unwrap();
    let first = world.get_project(Some(&project.id), None).unwrap().sign_key.unwrap();
    world.enable_sign_key(&project.id, false).unwrap();
    assert_eq!(world.get_project(Some(&project.id), None).unwrap().sign_key.as_deref(), Some(""));
    world.enable_sign_key(&project.id, true).unwrap();
    assert_eq!(
        world.get_project(Some(&project.id), None).unwrap().sign_key.unwrap(),
        first,
        "re-enabling restores the key"
    );
    world.reset_sign_key(&project.id).unwrap();
    assert_ne!(world.get_project(Some(&project.id), None).unwrap().sign_key.unwrap(), first);
}

#[test]
fn kicking_rules_validate_clamp_expire_and_kick() {
    let mut world = World::new(7);
    let app = world.create_project("a", false, now()).unwrap().vendor_key;
    let members = ChannelMembers { users: vec![1, 2, 3], ..Default::default() };
    world.join_channel(&app, "room", Mode::Communication, &members, now()).unwrap();

    let rule = |cname: Option<&str>, uid: Option<u32>, ip: Option<&str>, time: i32| types::CreateKickingRuleRequest {
        appid: app.clone(),
        cname: cname.map(str::to_string),
        uid,
        ip: ip.map(str::to_string),
        time: Some(time.into()),
        privileges: vec!["join_channel".into()],
        extra: Default::default(),
    };
    assert_eq!(world.create_rule(&rule(Some(""), None, None, 60), now()).unwrap_err().status, StatusCode::BAD_REQUEST);
    assert_eq!(world.create_rule(&rule(None, Some(0), None, 60), now()).unwrap_err().status, StatusCode::BAD_REQUEST);
    assert_eq!(world.create_rule(&rule(None, None, Some("0"), 60), now()).unwrap_err().status, StatusCode::BAD_REQUEST);
    assert_eq!(world.create_rule(&rule(None, None, None, 60), now()).unwrap_err().status, StatusCode::BAD_REQUEST);

    let ban = world.create_rule(&rule(Some("room"), Some(2), None, 5000), now()).unwrap();
    let once = world.create_rule(&rule(None, Some(3), None, 0), now()).unwrap();
    assert!(once.id > ban.id, "rule ids increase");
    assert_eq!((ban.minutes, once.minutes), (1440, 0));
    let ban = ban.id;
    let rules = world.list_rules(&app, now()).unwrap();
    assert_eq!(rules.len(), 1, "a kick-once rule is not in force");
    assert_eq!(rules[0].ts, Some(timestamp(now() + Duration::minutes(1440))));
    assert_eq!(world.channel_users(&app, "room").unwrap().users, vec![1], "users 2 and 3 were kicked");

    let later = now() + Duration::minutes(1441);
    assert!(world.list_rules(&app, later).unwrap().is_empty(), "expired rules are gone");
    assert_eq!(world.delete_rule(&app, ban, later), Err(ApiError::rule_not_found()));
}

#[test]
fn live_channels_list_at_most_10000_audience_members() {
    let mut world = World::new(7);
    let app = world.create_project("a", false, now()).unwrap().vendor_key;
    let members = ChannelMembers { broadcasters: vec![7], extra_audience: 10_500, ..Default::default() };
    world.join_channel(&app, "show", Mode::Live, &members, now()).unwrap();
    let users = world.channel_users(&app, "show").unwrap();
    assert_eq!(users.broadcasters, vec![7]);
    assert_eq!(users.audience.len(), MAX_AUDIENCE_LISTED);
    assert_eq!(users.audience_total, Some(10_500));
}

#[test]
fn channel_pages() {
    let mut world = World::new(7);
    let app = world.create_project("a", false, now()).unwrap().vendor_key;
    for n in 0..7 {
        let members = ChannelMembers { users: vec![n + 1], ..Default::default() };
        world.join_channel(&app, &format!("c{n}"), Mode::Communication, &members, now()).unwrap();
    }
    let page = world.list_channels(&app, 1, 3).unwrap();
    assert_eq!(page.total_size, Some(7));
    let names: Vec<_> = page.channels.iter().map(|c| c.channel_name.as_str()).collect();
    assert_eq!(names, ["c3", "c4", "c5"]);
    assert!(world.list_channels(&app, 0, 501).is_err());
    assert!(world.list_channels(&app, 0, 0).unwrap().channels.is_empty(), "the document sets no minimum");
    assert!(world.list_channels(&app, 9, 500).unwrap().channels.is_empty());
}

#[test]
fn usage_ranges_are_checked() {
    let mut world = World::new(7);
    world.create_project("a", false, now() - Duration::days(400)).unwrap();
    let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let today = now().date_naive();
    assert!(world.usage_v1(day("2026-02-02"), day("2026-02-01"), None, today).is_err());
    assert!(world.usage_v1(day("2025-01-01"), day("2026-01-02"), None, today).is_err());
    let usage = world.usage_v1(day("2026-01-01"), day("2026-01-31"), None, today).unwrap();
    assert_eq!(usage.usages[0].daily.len(), 31);
    let ignored = world.usage_v1(day("2026-01-01"), day("2026-01-31"), Some(&["nope".to_string()]), today).unwrap();
    assert!(ignored.usages.is_empty(), "unknown projects are ignored");
}
