//! The demo account: a few projects of three made-up companies, channels in both modes, a kicking
//! rule and a year of usage history. Deterministic: the same seed gives the same IDs and keys.

use chrono::{DateTime, Duration, Utc};

use crate::world::{ChannelMembers, Mode, World};

/// The random seed of the demo account's IDs and keys.
pub(crate) const DEMO_SEED: u64 = 0x000A_602A;

pub(crate) fn demo(world: &mut World, now: DateTime<Utc>) {
    let origin: DateTime<Utc> = "2025-06-01T08:00:00Z".parse().expect("a valid timestamp");
    let project = |world: &mut World, name: &str, sign_key: bool, enabled: bool, days: i64| {
        world.insert_project(name, sign_key, enabled, origin + Duration::days(days)).vendor_key
    };
    let acme_web = project(world, "acme-web", true, true, 0);
    let acme_mobile = project(world, "acme-mobile", false, true, 30);
    let globex_live = project(world, "globex-live", true, true, 60);
    project(world, "globex-archive", true, false, 90);
    project(world, "initech-staging", false, true, 120);

    let join = |world: &mut World, app: &str, cname: &str, mode: Mode, members: ChannelMembers| {
        world.join_channel(app, cname, mode, &members, now).expect("seed channels are valid");
    };
    let users = |uids: &[u32]| ChannelMembers { users: uids.to_vec(), ..Default::default() };
    join(world, &acme_web, "lobby", Mode::Communication, users(&[1001, 1002, 1003]));
    join(world, &acme_web, "standup", Mode::Communication, users(&[1001, 1004]));
    join(
        world,
        &acme_web,
        "town-hall",
        Mode::Live,
        ChannelMembers { broadcasters: vec![2001], audience: (3001..3250).collect(), ..Default::default() },
    );
    // uids go above 2^31 (a real client's random uids do).
    join(world, &acme_mobile, "support", Mode::Communication, users(&[5001, 2_206_227_541]));
    join(
        world,
        &globex_live,
        "launch-event",
        Mode::Live,
        ChannelMembers { broadcasters: vec![9001, 9002], extra_audience: 12_000, ..Default::default() },
    );
    for room in 0..120u32 {
        join(world, &globex_live, &format!("room-{room:03}"), Mode::Communication, users(&[7000 + room, 8000 + room]));
    }

    let ban = agora_console_client::types::CreateKickingRuleRequest {
        appid: acme_web,
        cname: Some("lobby".into()),
        uid: Some(4242),
        ip: None,
        time: Some(1440.into()),
        privileges: vec!["join_channel".into()],
        extra: Default::default(),
    };
    world.create_rule(&ban, now).expect("the seed rule is valid");
}

/// `count` more projects, `filler-00001` and on, half of them with an App certificate.
pub(crate) fn fillers(world: &mut World, count: usize) {
    let origin: DateTime<Utc> = "2025-01-01T00:00:00Z".parse().expect("a valid timestamp");
    for n in 1..=count {
        let minutes = i64::try_from(n).unwrap_or(i64::MAX);
        world.insert_project(&format!("filler-{n:05}"), n % 2 == 0, true, origin + Duration::minutes(minutes));
    }
}
