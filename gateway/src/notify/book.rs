//! One project's channels as the notices tell them ([`Book`]): who is in which channel, in which
//! role, since when — each user's events ordered by `clientSeq` (an older one that comes later,
//! or a duplicate, changes nothing; a leave remembered for a while keeps a join that comes after
//! it out); and corrected by polls of Agora (`reconcile`), which win over what no event since the
//! poll was sent has touched. It answers the channel queries in Agora's shapes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use agora_console_client::rules::MAX_AUDIENCE_LISTED;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::event::{Event, Role};

/// How long a leave is remembered, against a join with an older `clientSeq` that comes later
/// (Agora gives up resending after three retries, well within this).
const REMEMBER_LEAVES: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
struct User {
    role: Role,
    /// When the user joined (Unix seconds) and on which platform: known from a join notice, not
    /// from a poll.
    join: Option<i64>,
    platform: Option<i64>,
    /// The `clientSeq` of the user's last event applied (none when a poll put the user here).
    seq: Option<i64>,
    /// When the gateway last changed or learned this user.
    touched: Instant,
}

#[derive(Debug, Default)]
struct Channel {
    /// 1 communication, 2 live.
    mode: Option<i64>,
    users: BTreeMap<u32, User>,
    /// When a poll of Agora last confirmed or corrected it (or, for a channel that began with a
    /// notice, when it began).
    reconciled: Option<Instant>,
}

/// What a poll of one channel answered: whether it exists, its mode, its users with their roles;
/// `partial` when Agora listed only part of the audience (over 10,000).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Polled {
    pub(crate) mode: Option<i64>,
    pub(crate) users: Vec<(u32, Role)>,
    pub(crate) partial: bool,
}

/// One project's channels.
#[derive(Debug, Default)]
pub(crate) struct Book {
    channels: BTreeMap<String, Channel>,
    /// Users who left, by channel and uid: the `clientSeq` of the leave, and when it came.
    left: HashMap<(String, u32), (i64, Instant)>,
}

impl Book {
    /// Applies one notice's event; answers whether it changed anything.
    pub(crate) fn apply(&mut self, event: Event, now: Instant) -> bool {
        match event {
            Event::Joined { cname, uid, role, seq, ts, platform } => {
                let key = (cname, uid);
                if self.left.get(&key).is_some_and(|(left, _)| *left >= seq) {
                    return false;
                }
                let (cname, uid) = key;
                // A channel new to the book is as fresh as this event: due for a poll in a while.
                let channel = self
                    .channels
                    .entry(cname.clone())
                    .or_insert_with(|| Channel { reconciled: Some(now), ..Default::default() });
                if channel.users.get(&uid).is_some_and(|user| user.seq.is_some_and(|known| known >= seq)) {
                    return false;
                }
                channel.mode = Some(role.mode());
                let user = User { role, join: Some(ts), platform, seq: Some(seq), touched: now };
                channel.users.insert(uid, user);
                self.left.remove(&(cname, uid));
                true
            }
            Event::Left { cname, uid, seq } => {
                let remembered = self.left.entry((cname.clone(), uid)).or_insert((seq, now));
                *remembered = (remembered.0.max(seq), now);
                let Some(channel) = self.channels.get_mut(&cname) else { return false };
                if channel.users.get(&uid).is_none_or(|user| user.seq.is_some_and(|known| known >= seq)) {
                    return false;
                }
                channel.users.remove(&uid);
                if channel.users.is_empty() {
                    self.channels.remove(&cname);
                }
                true
            }
            Event::RoleChanged { cname, uid, role, seq } => {
                let user = self.channels.get_mut(&cname).and_then(|channel| channel.users.get_mut(&uid));
                match user {
                    Some(user) if user.seq.is_none_or(|known| known < seq) => {
                        (user.role, user.seq, user.touched) = (role, Some(seq), now);
                        true
                    }
                    _ => false,
                }
            }
            // The channel ended: whoever is still here left before `ts` (their leaves were lost).
            Event::Destroyed { cname, ts } => {
                let Some(channel) = self.channels.get_mut(&cname) else { return false };
                let before = channel.users.len();
                channel.users.retain(|_, user| user.join.is_some_and(|join| join > ts));
                let changed = channel.users.len() != before;
                if channel.users.is_empty() {
                    self.channels.remove(&cname);
                }
                changed
            }
            // A channel exists once somebody is in it: its first join says so.
            Event::Created | Event::Other => false,
        }
    }

    /// Corrects one channel by what a poll sent at `sent` answered (`None`: it does not exist).
    /// Users an event touched since then keep what the event said. Answers the corrections, and
    /// the users the poll added (whose join time and platform are not known yet).
    pub(crate) fn reconcile(
        &mut self,
        cname: &str,
        polled: Option<Polled>,
        sent: Instant,
        now: Instant,
    ) -> (u64, Vec<u32>) {
        let polled = polled.unwrap_or_default();
        let left_since = |left: &HashMap<(String, u32), (i64, Instant)>, uid: u32| {
            left.get(&(cname.to_string(), uid)).is_some_and(|(_, at)| *at >= sent)
        };
        let (mut corrections, mut added) = (0, Vec::new());
        let channel = self.channels.entry(cname.to_string()).or_default();
        for &(uid, role) in &polled.users {
            if left_since(&self.left, uid) {
                continue;
            }
            match channel.users.get_mut(&uid) {
                Some(user) if user.touched >= sent || user.role == role => {}
                Some(user) => {
                    (user.role, user.touched) = (role, now);
                    corrections += 1;
                }
                None => {
                    channel.users.insert(uid, User { role, join: None, platform: None, seq: None, touched: now });
                    corrections += 1;
                    added.push(uid);
                }
            }
        }
        let listed: std::collections::HashSet<u32> = polled.users.iter().map(|(uid, _)| *uid).collect();
        let before = channel.users.len();
        channel.users.retain(|uid, user| {
            let unlisted_audience = polled.partial && user.role == Role::Audience;
            listed.contains(uid) || user.touched >= sent || unlisted_audience
        });
        corrections += (before - channel.users.len()) as u64;
        if polled.mode.is_some() {
            channel.mode = polled.mode;
        }
        channel.reconciled = Some(now);
        if channel.users.is_empty() {
            self.channels.remove(cname);
        }
        (corrections, added)
    }

    /// What `get_user_property` answered (a poll sent at `sent`) for a user the book has by a
    /// poll alone: its join time and platform, if the role agrees and no event touched it since.
    pub(crate) fn learn(&mut self, cname: &str, uid: u32, answer: &Value, sent: Instant) {
        let Some(user) = self.channels.get_mut(cname).and_then(|channel| channel.users.get_mut(&uid)) else {
            return;
        };
        let data = &answer["data"];
        let (join, platform, role) = (data["join"].as_i64(), data["platform"].as_i64(), data["role"].as_i64());
        let agrees = data["in_channel"] == true && role == Some(user.role as i64) && user.touched < sent;
        if agrees
            && user.join.is_none()
            && let (Some(join), Some(platform)) = (join, platform)
        {
            (user.join, user.platform) = (Some(join), Some(platform));
        }
    }

    /// Corrects the list of channels by a poll of `list_channels` sent at `sent`: channels
    /// nobody is in by Agora's list, and untouched since, are dropped. Answers the corrections,
    /// and the channels whose users should be polled (new to the book, or of another count).
    pub(crate) fn reconcile_list(&mut self, listed: &[(String, i64)], sent: Instant) -> (u64, Vec<String>) {
        let mut corrections = 0;
        let names: std::collections::HashSet<&str> = listed.iter().map(|(name, _)| name.as_str()).collect();
        self.channels.retain(|name, channel| {
            let keep = names.contains(name.as_str()) || channel.users.values().any(|user| user.touched >= sent);
            if !keep {
                corrections += channel.users.len() as u64;
            }
            keep
        });
        let due = listed
            .iter()
            .filter(|(name, count)| self.channels.get(name).is_none_or(|channel| channel.users.len() as i64 != *count))
            .map(|(name, _)| name.clone())
            .collect();
        (corrections, due)
    }

    /// The channels whose last poll is older than `every` (or that were never polled).
    pub(crate) fn due(&self, every: Duration, now: Instant) -> Vec<String> {
        let due = |channel: &Channel| channel.reconciled.is_none_or(|at| now.saturating_duration_since(at) >= every);
        self.channels.iter().filter(|(_, channel)| due(channel)).map(|(name, _)| name.clone()).collect()
    }

    /// Forgets leaves older than what a late join could still be.
    pub(crate) fn prune(&mut self, now: Instant) {
        self.left.retain(|_, (_, at)| now.saturating_duration_since(*at) < REMEMBER_LEAVES);
    }

    /// `list_channel_users` (`hosts_only`: `list_channel_hosts`), as Agora answers it.
    pub(crate) fn channel_users(&self, cname: &str, hosts_only: bool) -> Value {
        let Some(channel) = self.channels.get(cname) else {
            return json!({ "success": true, "data": { "channel_exist": false } });
        };
        let uids = |role: Role| -> Vec<u32> {
            channel.users.iter().filter(|(_, user)| user.role == role).map(|(uid, _)| *uid).collect()
        };
        let mut data = json!({ "channel_exist": true, "mode": channel.mode });
        // As Agora: a list with nobody in it is left out.
        let mut list = |name: &str, uids: Vec<u32>| {
            if !uids.is_empty() {
                data[name] = json!(uids);
            }
        };
        if channel.mode == Some(Role::Communication.mode()) {
            let users = uids(Role::Communication);
            let total = users.len();
            if !hosts_only {
                list("users", users);
                data["total"] = json!(total);
            }
        } else {
            list("broadcasters", uids(Role::Broadcaster));
            if !hosts_only {
                let audience = uids(Role::Audience);
                let total = audience.len();
                list("audience", audience.into_iter().take(MAX_AUDIENCE_LISTED).collect());
                data["audience_total"] = json!(total);
            }
        }
        json!({ "success": true, "data": data })
    }

    /// `get_user_property`, as Agora answers it; `None` when the user is here by a poll alone
    /// (the join time and platform are not known).
    pub(crate) fn user_property(&self, uid: u32, cname: &str) -> Option<Value> {
        let Some(user) = self.channels.get(cname).and_then(|channel| channel.users.get(&uid)) else {
            return Some(json!({ "success": true, "data": { "in_channel": false } }));
        };
        let (join, platform) = (user.join?, user.platform?);
        let data =
            json!({ "join": join, "in_channel": true, "role": user.role as i64, "uid": uid, "platform": platform });
        Some(json!({ "success": true, "data": data }))
    }

    /// `list_channels`, as Agora answers it (by channel name).
    pub(crate) fn list_channels(&self, page_no: usize, page_size: usize) -> Value {
        let channels: Vec<Value> = self
            .channels
            .iter()
            .skip(page_no.saturating_mul(page_size))
            .take(page_size)
            .map(|(name, channel)| json!({ "channel_name": name, "user_count": channel.users.len() }))
            .collect();
        json!({ "success": true, "data": { "channels": channels, "total_size": self.channels.len() } })
    }
}
