//! A notice of Agora's Notifications service (NCS), read: `{"noticeId", "productId", "eventType",
//! "notifyMs", "sid", "payload"}`, and the channel event it carries (RTC, `productId` 1): 101/102
//! channel created/destroyed; 103/104 broadcaster, 105/106 audience (live), 107/108 user
//! (communication) join/leave; 111/112 role changed to broadcaster/audience.

use serde::Deserialize;

/// A user's role, with Agora's codes (as `get_user_property` answers them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Communication = 1,
    Broadcaster = 2,
    Audience = 3,
}

impl Role {
    /// The channel's mode: 1 communication, 2 live.
    pub(crate) fn mode(self) -> i64 {
        match self {
            Role::Communication => 1,
            Role::Broadcaster | Role::Audience => 2,
        }
    }
}

/// A channel event of a notice.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    Created,
    Destroyed {
        cname: String,
        ts: i64,
    },
    Joined {
        cname: String,
        uid: u32,
        role: Role,
        seq: i64,
        ts: i64,
        platform: Option<i64>,
    },
    Left {
        cname: String,
        uid: u32,
        seq: i64,
    },
    RoleChanged {
        cname: String,
        uid: u32,
        role: Role,
        seq: i64,
    },
    /// Another product's or type's event: accepted, and nothing to do.
    Other,
}

/// The parts of a notice the gateway reads; other fields are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Notice {
    pub(crate) notice_id: String,
    pub(crate) product_id: i64,
    pub(crate) event_type: i64,
    #[serde(default)]
    payload: Payload,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    channel_name: Option<String>,
    uid: Option<u32>,
    platform: Option<i64>,
    client_seq: Option<i64>,
    ts: Option<i64>,
}

impl Notice {
    /// The channel event, or a message naming what an RTC channel event lacks.
    pub(crate) fn event(&self) -> Result<Event, String> {
        const RTC: i64 = 1;
        if self.product_id != RTC {
            return Ok(Event::Other);
        }
        let payload = &self.payload;
        let need = |value: Option<i64>, name: &str| value.ok_or_else(|| format!("payload.{name} is missing"));
        let cname = || payload.channel_name.clone().ok_or_else(|| "payload.channelName is missing".to_string());
        let uid = || payload.uid.ok_or_else(|| "payload.uid is missing (or not a 32-bit unsigned integer)".to_string());
        let joined = |role: Role| -> Result<Event, String> {
            Ok(Event::Joined {
                cname: cname()?,
                uid: uid()?,
                role,
                seq: need(payload.client_seq, "clientSeq")?,
                ts: need(payload.ts, "ts")?,
                platform: payload.platform,
            })
        };
        let left = || -> Result<Event, String> {
            Ok(Event::Left { cname: cname()?, uid: uid()?, seq: need(payload.client_seq, "clientSeq")? })
        };
        let role_changed = |role: Role| -> Result<Event, String> {
            Ok(Event::RoleChanged { cname: cname()?, uid: uid()?, role, seq: need(payload.client_seq, "clientSeq")? })
        };
        match self.event_type {
            101 => Ok(Event::Created),
            102 => Ok(Event::Destroyed { cname: cname()?, ts: need(payload.ts, "ts")? }),
            103 => joined(Role::Broadcaster),
            105 => joined(Role::Audience),
            107 => joined(Role::Communication),
            104 | 106 | 108 => left(),
            111 => role_changed(Role::Broadcaster),
            112 => role_changed(Role::Audience),
            _ => Ok(Event::Other),
        }
    }
}
