//! Online channels: who is in which channel of which app, in which role; the three channel
//! queries, and users joining (through the `/__sandbox/channels` hook and the demo seed).

use std::collections::BTreeMap;

use agora_console_client::rules::{self, MAX_AUDIENCE_LISTED};
use agora_console_client::types;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::{ApiError, ApiResult, World};

/// A Notifications (NCS) event of a channel, as Agora would send it for this app: its `eventType`
/// and `payload` (`notify.rs` signs and delivers it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChannelEvent {
    pub appid: String,
    pub event_type: u16,
    pub payload: serde_json::Value,
}

/// NCS event types of RTC channels.
mod event_type {
    pub(super) const CHANNEL_CREATED: u16 = 101;
    pub(super) const CHANNEL_DESTROYED: u16 = 102;
    pub(super) const ROLE_TO_BROADCASTER: u16 = 111;
    pub(super) const ROLE_TO_AUDIENCE: u16 = 112;
}

/// Why a user left, in Agora's codes: 1 quit, 3 kicked out through the RESTful API.
pub(crate) const LEFT: i64 = 1;
const KICKED: i64 = 3;

/// Channel profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Communication,
    Live,
}

impl Role {
    /// The NCS event types of joining and leaving in this role.
    fn join_leave_events(self) -> (u16, u16) {
        match self {
            Role::Broadcaster => (103, 104),
            Role::Audience => (105, 106),
            Role::Communication => (107, 108),
        }
    }
}

impl Mode {
    fn code(self) -> i64 {
        match self {
            Mode::Communication => 1,
            Mode::Live => 2,
        }
    }
}

/// A user's role, with Agora's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Communication = 1,
    Broadcaster = 2,
    Audience = 3,
}

#[derive(Debug, Clone)]
pub(super) struct Member {
    uid: u32,
    role: Role,
    joined: i64,
    /// The `clientSeq` of the user's last event.
    seq: i64,
}

#[derive(Debug, Clone)]
pub(super) struct Channel {
    mode: Mode,
    members: Vec<Member>,
}

/// Who joins a channel through the `/__sandbox/channels` hook (and the demo seed).
#[derive(Debug, Clone, Default)]
pub(crate) struct ChannelMembers {
    /// Users of a communication channel.
    pub users: Vec<u32>,
    /// Broadcasters of a live channel.
    pub broadcasters: Vec<u32>,
    /// Audience of a live channel.
    pub audience: Vec<u32>,
    /// Further audience members with made-up uids (for channels of more than 10,000).
    pub extra_audience: u32,
}

/// A user in a channel: since when, in which role, from which platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserState {
    pub uid: u32,
    /// Unix seconds.
    pub joined: i64,
    pub role: i64,
    /// Agora's platform code: 1 Android, 2 iOS, 5 Windows, 6 Linux, 7 Web, 8 macOS.
    pub platform: i64,
}

/// The made-up platform of a user (the same uid always on the same platform).
fn platform_of(uid: u32) -> i64 {
    [1, 2, 5, 6, 7, 8][(uid % 6) as usize]
}

impl World {
    /// The user's state in the channel, or `None` when not in it.
    pub(crate) fn user_state(&self, appid: &str, uid: u32, cname: &str) -> ApiResult<Option<UserState>> {
        self.require_app(appid)?;
        let member = self
            .channels
            .get(appid)
            .and_then(|channels| channels.get(cname))
            .and_then(|channel| channel.members.iter().find(|m| m.uid == uid));
        Ok(member.map(|member| UserState {
            uid,
            joined: member.joined,
            role: member.role as i64,
            platform: platform_of(uid),
        }))
    }

    pub(crate) fn channel_users(&self, appid: &str, cname: &str) -> ApiResult<types::ChannelUsers> {
        self.require_app(appid)?;
        let Some(channel) = self.channels.get(appid).and_then(|channels| channels.get(cname)) else {
            return Ok(missing_channel());
        };
        let uids = |role: Role| channel.members.iter().filter(move |m| m.role == role).map(|m| m.uid);
        let mode = Some(channel.mode.code());
        Ok(match channel.mode {
            Mode::Communication => {
                let users: Vec<u32> = uids(Role::Communication).collect();
                types::ChannelUsers { mode, total: Some(users.len() as i64), users, ..missing_channel_that_exists() }
            }
            Mode::Live => types::ChannelUsers {
                mode,
                broadcasters: uids(Role::Broadcaster).collect(),
                audience: uids(Role::Audience).take(MAX_AUDIENCE_LISTED).collect(),
                audience_total: Some(uids(Role::Audience).count() as i64),
                ..missing_channel_that_exists()
            },
        })
    }

    pub(crate) fn has_app(&self, appid: &str) -> bool {
        self.require_app(appid).is_ok()
    }

    pub(crate) fn list_channels(&self, appid: &str, page_no: u32, page_size: u32) -> ApiResult<types::ChannelPage> {
        self.require_app(appid)?;
        rules::check_page_size(page_size).map_err(ApiError::bad_request)?;
        let empty = BTreeMap::new();
        let channels = self.channels.get(appid).unwrap_or(&empty);
        let skip = (page_no as usize).saturating_mul(page_size as usize);
        Ok(types::ChannelPage {
            channels: channels
                .iter()
                .skip(skip)
                .take(page_size as usize)
                .map(|(name, channel)| types::ChannelSummary {
                    channel_name: name.clone(),
                    user_count: Some(channel.members.len() as i64),
                    extra: Default::default(),
                })
                .collect(),
            total_size: Some(channels.len() as i64),
            extra: Default::default(),
        })
    }

    /// Puts users into a channel (creating it), as clients joining through the SDK would.
    pub(crate) fn join_channel(
        &mut self,
        appid: &str,
        cname: &str,
        mode: Mode,
        members: &ChannelMembers,
        now: DateTime<Utc>,
    ) -> ApiResult<()> {
        self.require_app(appid)?;
        if cname.is_empty() {
            return Err(ApiError::bad_request("cname must not be empty"));
        }
        let mut joining: Vec<(u32, Role)> = match mode {
            Mode::Communication => {
                if !members.broadcasters.is_empty() || !members.audience.is_empty() || members.extra_audience > 0 {
                    return Err(ApiError::bad_request(
                        "a communication channel has users, not broadcasters or audience",
                    ));
                }
                members.users.iter().map(|&uid| (uid, Role::Communication)).collect()
            }
            Mode::Live => {
                if !members.users.is_empty() {
                    return Err(ApiError::bad_request("a live channel has broadcasters and audience, not users"));
                }
                let mut joining: Vec<(u32, Role)> =
                    members.broadcasters.iter().map(|&uid| (uid, Role::Broadcaster)).collect();
                joining.extend(members.audience.iter().map(|&uid| (uid, Role::Audience)));
                joining.extend((0..members.extra_audience).map(|n| (1_000_000_000 + n, Role::Audience)));
                joining
            }
        };
        if joining.iter().any(|(uid, _)| *uid == 0) {
            return Err(ApiError::bad_request("uid 0 cannot join a channel"));
        }
        let channels = self.channels.entry(appid.to_string()).or_default();
        if channels.get(cname).is_some_and(|channel| channel.mode != mode) {
            return Err(ApiError::bad_request(format!("channel {cname:?} is already in the other mode")));
        }
        let ts = now.timestamp();
        if !channels.contains_key(cname) {
            channels.insert(cname.to_string(), Channel { mode, members: Vec::new() });
            let payload = json!({ "channelName": cname, "ts": ts });
            self.events.push(ChannelEvent { appid: appid.into(), event_type: event_type::CHANNEL_CREATED, payload });
        }
        let channel = self.channels.get_mut(appid).and_then(|channels| channels.get_mut(cname)).expect("just made");
        joining.retain(|(uid, _)| !channel.members.iter().any(|m| m.uid == *uid));
        for (uid, role) in joining {
            self.next_seq += 1;
            let seq = self.next_seq;
            channel.members.push(Member { uid, role, joined: ts, seq });
            let payload = json!({
                "channelName": cname, "uid": uid, "platform": platform_of(uid), "clientType": 0,
                "clientSeq": seq, "ts": ts,
            });
            self.events.push(ChannelEvent { appid: appid.into(), event_type: role.join_leave_events().0, payload });
        }
        Ok(())
    }

    /// Users leave a channel (`reason`: Agora's code); the channel ends with its last user.
    pub(crate) fn leave_channel(
        &mut self,
        appid: &str,
        cname: &str,
        uids: &[u32],
        now: DateTime<Utc>,
    ) -> ApiResult<()> {
        self.require_app(appid)?;
        let Some(channel) = self.channels.get_mut(appid).and_then(|channels| channels.get_mut(cname)) else {
            return Ok(());
        };
        let (leaving, staying): (Vec<Member>, Vec<Member>) =
            channel.members.drain(..).partition(|member| uids.contains(&member.uid));
        channel.members = staying;
        self.left(appid, cname, leaving, LEFT, now.timestamp());
        Ok(())
    }

    /// A user of a live channel changes role (broadcaster or audience).
    pub(crate) fn change_role(&mut self, appid: &str, cname: &str, uid: u32, broadcaster: bool) -> ApiResult<()> {
        self.require_app(appid)?;
        let Some(member) = self
            .channels
            .get_mut(appid)
            .and_then(|channels| channels.get_mut(cname))
            .filter(|channel| channel.mode == Mode::Live)
            .and_then(|channel| channel.members.iter_mut().find(|m| m.uid == uid))
        else {
            return Err(ApiError::bad_request(format!("uid {uid} is not in live channel {cname:?}")));
        };
        let (role, event_type) = match broadcaster {
            true => (Role::Broadcaster, event_type::ROLE_TO_BROADCASTER),
            false => (Role::Audience, event_type::ROLE_TO_AUDIENCE),
        };
        if member.role == role {
            return Ok(());
        }
        self.next_seq += 1;
        member.role = role;
        member.seq = self.next_seq;
        let payload = json!({
            "channelName": cname, "uid": uid, "clientSeq": member.seq, "ts": Utc::now().timestamp(),
        });
        self.events.push(ChannelEvent { appid: appid.into(), event_type, payload });
        Ok(())
    }

    /// The events of users who left `cname`, and of the channel's end if nobody is left.
    fn left(&mut self, appid: &str, cname: &str, leaving: Vec<Member>, reason: i64, ts: i64) {
        for member in leaving {
            self.next_seq += 1;
            let payload = json!({
                "channelName": cname, "uid": member.uid, "platform": platform_of(member.uid), "clientType": 0,
                "clientSeq": self.next_seq, "ts": ts, "reason": reason,
            });
            let event_type = member.role.join_leave_events().1;
            self.events.push(ChannelEvent { appid: appid.into(), event_type, payload });
        }
        let Some(channels) = self.channels.get_mut(appid) else { return };
        if channels.get(cname).is_some_and(|channel| channel.members.is_empty()) {
            channels.remove(cname);
            let payload = json!({ "channelName": cname, "ts": ts });
            self.events.push(ChannelEvent { appid: appid.into(), event_type: event_type::CHANNEL_DESTROYED, payload });
        }
    }

    /// A channel with somebody in it, picked at random (an app, then one of its channels): its
    /// app, name and mode.
    pub(crate) fn random_channel(&self, rng: &mut fastrand::Rng) -> Option<(String, String, Mode)> {
        let apps: Vec<(&String, &BTreeMap<String, Channel>)> =
            self.channels.iter().filter(|(_, channels)| !channels.is_empty()).collect();
        let (appid, channels) = apps.get(rng.usize(..apps.len().max(1)))?;
        let (cname, channel) = channels.iter().nth(rng.usize(..channels.len()))?;
        Some(((*appid).clone(), cname.clone(), channel.mode))
    }

    /// The channel events since the last call, in the order they happened.
    pub(crate) fn take_events(&mut self) -> Vec<ChannelEvent> {
        std::mem::take(&mut self.events)
    }

    /// Takes the users a kicking rule matches out of their channels (the sandbox knows no IP
    /// addresses, so a rule by IP alone kicks nobody).
    pub(super) fn kick(&mut self, appid: &str, cname: Option<&str>, uid: Option<u32>) {
        if cname.is_none() && uid.is_none() {
            return;
        }
        let Some(channels) = self.channels.get_mut(appid) else { return };
        let mut kicked = Vec::new();
        for (name, channel) in channels.iter_mut() {
            if cname.is_some_and(|cname| cname != name) {
                continue;
            }
            let (leaving, staying) = channel.members.drain(..).partition(|m| uid.is_none_or(|uid| uid == m.uid));
            channel.members = staying;
            kicked.push((name.clone(), leaving));
        }
        let ts = Utc::now().timestamp();
        for (name, leaving) in kicked {
            self.left(appid, &name, leaving, KICKED, ts);
        }
    }
}

/// The answer about a channel that does not exist: `channel_exist: false` and nothing else.
pub(crate) fn missing_channel() -> types::ChannelUsers {
    types::ChannelUsers {
        channel_exist: false,
        mode: None,
        total: None,
        users: vec![],
        broadcasters: vec![],
        audience: vec![],
        audience_total: None,
        extra: Default::default(),
    }
}

fn missing_channel_that_exists() -> types::ChannelUsers {
    types::ChannelUsers { channel_exist: true, ..missing_channel() }
}
