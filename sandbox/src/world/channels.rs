//! Online channels: who is in which channel of which app, in which role; the three channel
//! queries, and users joining (through the `/__sandbox/channels` hook and the demo seed).

use std::collections::BTreeMap;

use agora_console_client::rules::{self, MAX_AUDIENCE_LISTED};
use agora_console_client::types;
use chrono::{DateTime, Utc};

use super::{ApiError, ApiResult, World};

/// Channel profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Communication,
    Live,
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
        let channel = self
            .channels
            .entry(appid.to_string())
            .or_default()
            .entry(cname.to_string())
            .or_insert_with(|| Channel { mode, members: Vec::new() });
        if channel.mode != mode {
            return Err(ApiError::bad_request(format!("channel {cname:?} is already in the other mode")));
        }
        joining.retain(|(uid, _)| !channel.members.iter().any(|m| m.uid == *uid));
        channel.members.extend(joining.into_iter().map(|(uid, role)| Member { uid, role, joined: now.timestamp() }));
        Ok(())
    }

    /// Takes the users a kicking rule matches out of their channels (the sandbox knows no IP
    /// addresses, so a rule by IP alone kicks nobody).
    pub(super) fn kick(&mut self, appid: &str, cname: Option<&str>, uid: Option<u32>) {
        if cname.is_none() && uid.is_none() {
            return;
        }
        let Some(channels) = self.channels.get_mut(appid) else { return };
        for (name, channel) in channels.iter_mut() {
            if cname.is_some_and(|cname| cname != name) {
                continue;
            }
            channel.members.retain(|m| uid.is_some_and(|uid| uid != m.uid));
        }
        channels.retain(|_, channel| !channel.members.is_empty());
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
