//! The sandbox's in-memory Console account: projects, kicking rules and online channels, with the
//! rules Agora documents for each operation. Pure state: no HTTP, and time is always passed in.

use std::collections::BTreeMap;

use agora_console_client::rules::{self, MAX_AUDIENCE_LISTED};
use agora_console_client::types;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};

use crate::usage;

/// An answer other than 200, with Agora's `{"error_msg": ...}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// Agora's documented 404, typo included.
    pub fn project_not_found() -> Self {
        Self { status: StatusCode::NOT_FOUND, message: "project not exit".into() }
    }

    pub fn rule_not_found() -> Self {
        Self { status: StatusCode::NOT_FOUND, message: "rule not exist".into() }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Clone)]
pub struct ProjectRecord {
    pub id: String,
    pub name: String,
    pub vendor_key: String,
    /// The primary App certificate once generated; kept while disabled, so enabling brings it back.
    pub sign_key: Option<String>,
    pub sign_key_enabled: bool,
    pub recording_server: String,
    pub enabled: bool,
    pub created_ms: i64,
}

impl ProjectRecord {
    pub fn to_api(&self) -> types::Project {
        let sign_key = match (&self.sign_key, self.sign_key_enabled) {
            (Some(key), true) => key.clone(),
            _ => String::new(),
        };
        types::Project {
            id: self.id.clone(),
            name: self.name.clone(),
            vendor_key: self.vendor_key.clone(),
            sign_key: Some(sign_key),
            recording_server: Some(self.recording_server.clone()),
            status: project_status(self.enabled),
            created: self.created_ms,
        }
    }
}

fn project_status(enabled: bool) -> types::ProjectStatus {
    types::ProjectStatus::try_from(i64::from(enabled)).expect("0 and 1 are project statuses")
}

#[derive(Debug, Clone)]
struct RuleRecord {
    id: i64,
    appid: String,
    cname: Option<String>,
    uid: Option<u32>,
    ip: Option<String>,
    opid: i64,
    expires: DateTime<Utc>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

impl RuleRecord {
    fn to_api(&self) -> types::KickingRule {
        types::KickingRule {
            id: self.id,
            appid: self.appid.clone(),
            uid: self.uid,
            opid: self.opid,
            cname: self.cname.clone(),
            ip: self.ip.clone(),
            ts: timestamp(self.expires),
            create_at: timestamp(self.created),
            update_at: timestamp(self.updated),
        }
    }
}

/// Agora's timestamp format: `2018-01-09T07:23:06.000Z`.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Channel profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
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
pub enum Role {
    Communication = 1,
    Broadcaster = 2,
    Audience = 3,
}

#[derive(Debug, Clone)]
struct Member {
    uid: u32,
    role: Role,
    joined: i64,
}

#[derive(Debug, Clone)]
struct Channel {
    mode: Mode,
    members: Vec<Member>,
}

/// Who joins a channel through the `/__sandbox/channels` hook (and the demo seed).
#[derive(Debug, Clone, Default)]
pub struct ChannelMembers {
    /// Users of a communication channel.
    pub users: Vec<u32>,
    /// Broadcasters of a live channel.
    pub broadcasters: Vec<u32>,
    /// Audience of a live channel.
    pub audience: Vec<u32>,
    /// Further audience members with made-up uids (for channels of more than 10,000).
    pub extra_audience: u32,
}

pub struct World {
    rng: fastrand::Rng,
    projects: Vec<ProjectRecord>,
    rules: BTreeMap<i64, RuleRecord>,
    next_rule_id: i64,
    next_opid: i64,
    /// Online channels by app ID, then by channel name.
    channels: BTreeMap<String, BTreeMap<String, Channel>>,
}

impl World {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            projects: Vec::new(),
            rules: BTreeMap::new(),
            next_rule_id: 1,
            next_opid: 1,
            channels: BTreeMap::new(),
        }
    }

    fn hex(&mut self, len: usize) -> String {
        (0..len).map(|_| char::from_digit(self.rng.u32(0..16), 16).unwrap()).collect()
    }

    fn project_id(&mut self) -> String {
        (0..9).map(|_| self.rng.alphanumeric()).collect()
    }

    fn project_mut(&mut self, id: &str) -> ApiResult<&mut ProjectRecord> {
        self.projects.iter_mut().find(|p| p.id == id).ok_or_else(ApiError::project_not_found)
    }

    /// A project that exists and is enabled: the App certificate and recording writes need one.
    fn enabled_project_mut(&mut self, id: &str) -> ApiResult<&mut ProjectRecord> {
        match self.project_mut(id)? {
            project if project.enabled => Ok(project),
            _ => Err(ApiError::project_not_found()),
        }
    }

    fn require_app(&self, appid: &str) -> ApiResult<()> {
        if self.projects.iter().any(|p| p.vendor_key == appid) { Ok(()) } else { Err(ApiError::project_not_found()) }
    }

    // ---- projects ----

    pub fn create_project(
        &mut self,
        name: &str,
        enable_sign_key: bool,
        now: DateTime<Utc>,
    ) -> ApiResult<types::Project> {
        if name.trim().is_empty() {
            return Err(ApiError::bad_request("name must not be empty"));
        }
        if self.projects.iter().any(|p| p.name == name) {
            return Err(ApiError::bad_request(format!("a project named {name:?} already exists")));
        }
        let record = ProjectRecord {
            id: self.project_id(),
            name: name.to_string(),
            vendor_key: self.hex(32),
            sign_key: enable_sign_key.then(|| self.hex(32)),
            sign_key_enabled: enable_sign_key,
            recording_server: String::new(),
            enabled: true,
            created_ms: now.timestamp_millis(),
        };
        let api = record.to_api();
        self.projects.push(record);
        Ok(api)
    }

    pub fn list_projects(&self) -> Vec<types::Project> {
        self.projects.iter().map(ProjectRecord::to_api).collect()
    }

    pub fn get_project(&self, id: Option<&str>, name: Option<&str>) -> ApiResult<types::Project> {
        if id.is_none() && name.is_none() {
            return Err(ApiError::bad_request("id or name is required"));
        }
        self.projects
            .iter()
            .find(|p| id.is_none_or(|id| p.id == id) && name.is_none_or(|name| p.name == name))
            .map(ProjectRecord::to_api)
            .ok_or_else(ApiError::project_not_found)
    }

    pub fn set_project_status(&mut self, id: &str, enabled: bool) -> ApiResult<types::Project> {
        let project = self.project_mut(id)?;
        project.enabled = enabled;
        Ok(project.to_api())
    }

    pub fn delete_project(&mut self, id: &str) -> ApiResult<()> {
        let index = self.projects.iter().position(|p| p.id == id).ok_or_else(ApiError::project_not_found)?;
        let removed = self.projects.remove(index);
        self.channels.remove(&removed.vendor_key);
        self.rules.retain(|_, rule| rule.appid != removed.vendor_key);
        Ok(())
    }

    pub fn set_recording_config(&mut self, id: &str, recording_server: &str) -> ApiResult<()> {
        if recording_server.trim().is_empty() {
            return Err(ApiError::bad_request("recording_server must not be empty"));
        }
        self.enabled_project_mut(id)?.recording_server = recording_server.to_string();
        Ok(())
    }

    pub fn enable_sign_key(&mut self, id: &str, enable: bool) -> ApiResult<()> {
        let fresh = self.hex(32);
        let project = self.enabled_project_mut(id)?;
        if enable && project.sign_key.is_none() {
            project.sign_key = Some(fresh);
        }
        project.sign_key_enabled = enable;
        Ok(())
    }

    pub fn reset_sign_key(&mut self, id: &str) -> ApiResult<()> {
        let fresh = self.hex(32);
        let project = self.enabled_project_mut(id)?;
        project.sign_key = Some(fresh);
        project.sign_key_enabled = true;
        Ok(())
    }

    // ---- usage ----

    fn check_range(from: NaiveDate, to: NaiveDate) -> ApiResult<()> {
        rules::check_usage_range(from, to).map_err(ApiError::bad_request)
    }
    /// Usage v1: `projects` of `None` means every project; unknown IDs are ignored.
    pub fn usage_v1(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        projects: Option<&[String]>,
        today: NaiveDate,
    ) -> ApiResult<types::UsageV1Response> {
        Self::check_range(from, to)?;
        let usages = self
            .projects
            .iter()
            .filter(|p| projects.is_none_or(|wanted| wanted.contains(&p.id)))
            .map(|p| types::ProjectUsage {
                project: p.id.clone(),
                daily: usage::days(from, to, p.created_ms, today).map(|day| usage::daily_v1(&p.id, day)).collect(),
            })
            .collect();
        Ok(types::UsageV1Response { usages })
    }

    pub fn usage_v3(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        project_id: &str,
        business: types::UsageBusiness,
        today: NaiveDate,
    ) -> ApiResult<types::UsageV3Response> {
        Self::check_range(from, to)?;
        let project = self.projects.iter().find(|p| p.id == project_id).ok_or_else(ApiError::project_not_found)?;
        Ok(usage::v3(project, from, to, business, today))
    }

    // ---- kicking rules ----

    pub fn create_rule(&mut self, request: &types::CreateKickingRuleRequest, now: DateTime<Utc>) -> ApiResult<i64> {
        self.require_app(&request.appid)?;
        rules::check_kicking_rule(request).map_err(ApiError::bad_request)?;
        let minutes = rules::clamp_ban_minutes(request.time);
        let id = self.next_rule_id;
        self.next_rule_id += 1;
        let opid = self.next_opid;
        self.next_opid += 1;
        let rule = RuleRecord {
            id,
            appid: request.appid.clone(),
            cname: request.cname.clone(),
            uid: request.uid,
            ip: request.ip.clone(),
            opid,
            expires: now + Duration::minutes(minutes.into()),
            created: now,
            updated: now,
        };
        self.kick(&rule);
        self.rules.insert(id, rule);
        Ok(id)
    }

    /// Takes the users a rule matches out of their channels (the sandbox knows no IP addresses).
    fn kick(&mut self, rule: &RuleRecord) {
        if rule.cname.is_none() && rule.uid.is_none() {
            return;
        }
        let Some(channels) = self.channels.get_mut(&rule.appid) else {
            return;
        };
        for (name, channel) in channels.iter_mut() {
            if rule.cname.as_ref().is_some_and(|cname| cname != name) {
                continue;
            }
            channel.members.retain(|m| rule.uid.is_some_and(|uid| uid != m.uid));
        }
        channels.retain(|_, channel| !channel.members.is_empty());
    }

    /// Rules still in force (a kick-once rule never is).
    pub fn list_rules(&self, appid: &str, now: DateTime<Utc>) -> ApiResult<Vec<types::KickingRule>> {
        self.require_app(appid)?;
        Ok(self
            .rules
            .values()
            .filter(|rule| rule.appid == appid && rule.expires > now)
            .map(RuleRecord::to_api)
            .collect())
    }

    fn live_rule_mut(&mut self, appid: &str, id: i64, now: DateTime<Utc>) -> ApiResult<&mut RuleRecord> {
        self.require_app(appid)?;
        self.rules
            .get_mut(&id)
            .filter(|rule| rule.appid == appid && rule.expires > now)
            .ok_or_else(ApiError::rule_not_found)
    }

    pub fn update_rule(
        &mut self,
        appid: &str,
        id: i64,
        time: i32,
        now: DateTime<Utc>,
    ) -> ApiResult<types::KickingRuleExpiry> {
        let opid = self.next_opid;
        let rule = self.live_rule_mut(appid, id, now)?;
        rule.expires = now + Duration::minutes(rules::clamp_ban_minutes(time).into());
        rule.updated = now;
        rule.opid = opid;
        let expiry = types::KickingRuleExpiry { id, ts: timestamp(rule.expires) };
        self.next_opid += 1;
        Ok(expiry)
    }

    pub fn delete_rule(&mut self, appid: &str, id: i64, now: DateTime<Utc>) -> ApiResult<i64> {
        self.live_rule_mut(appid, id, now)?;
        self.rules.remove(&id);
        Ok(id)
    }

    // ---- channels ----

    pub fn user_property(&self, appid: &str, uid: u32, cname: &str) -> ApiResult<types::UserProperty> {
        self.require_app(appid)?;
        let member = self
            .channels
            .get(appid)
            .and_then(|channels| channels.get(cname))
            .and_then(|channel| channel.members.iter().find(|m| m.uid == uid));
        Ok(match member {
            Some(member) => types::UserProperty {
                join: member.joined,
                in_channel: true,
                role: types::UserRole::try_from(member.role as i64).expect("roles are 1 to 3"),
            },
            None => types::UserProperty {
                join: 0,
                in_channel: false,
                role: types::UserRole::try_from(0).expect("0 is the unknown role"),
            },
        })
    }

    pub fn channel_users(&self, appid: &str, cname: &str) -> ApiResult<types::ChannelUsers> {
        self.require_app(appid)?;
        let Some(channel) = self.channels.get(appid).and_then(|channels| channels.get(cname)) else {
            return Ok(types::ChannelUsers {
                channel_exist: false,
                mode: None,
                total: None,
                users: vec![],
                broadcasters: vec![],
                audience: vec![],
                audience_total: None,
            });
        };
        let uids = |role: Role| channel.members.iter().filter(move |m| m.role == role).map(|m| m.uid);
        let mode = Some(types::ChannelMode::try_from(channel.mode.code()).expect("1 and 2 are modes"));
        Ok(match channel.mode {
            Mode::Communication => {
                let users: Vec<u32> = uids(Role::Communication).collect();
                types::ChannelUsers {
                    channel_exist: true,
                    mode,
                    total: Some(users.len() as i64),
                    users,
                    broadcasters: vec![],
                    audience: vec![],
                    audience_total: None,
                }
            }
            Mode::Live => types::ChannelUsers {
                channel_exist: true,
                mode,
                total: None,
                users: vec![],
                broadcasters: uids(Role::Broadcaster).collect(),
                audience: uids(Role::Audience).take(MAX_AUDIENCE_LISTED).collect(),
                audience_total: Some(uids(Role::Audience).count() as i64),
            },
        })
    }

    pub fn list_channels(&self, appid: &str, page_no: u32, page_size: u32) -> ApiResult<types::ChannelPage> {
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
                    user_count: channel.members.len() as i64,
                })
                .collect(),
            total_size: channels.len() as i64,
        })
    }

    /// Puts users into a channel (creating it), as clients joining through the SDK would.
    pub fn join_channel(
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

    /// Inserts a project as it stood at some past time (the demo seed).
    pub fn insert_project(
        &mut self,
        name: &str,
        enable_sign_key: bool,
        enabled: bool,
        created: DateTime<Utc>,
    ) -> ProjectRecord {
        let project = self.create_project(name, enable_sign_key, created).expect("seed project names are unique");
        let record = self.projects.iter_mut().find(|p| p.id == project.id).expect("just created");
        record.enabled = enabled;
        record.clone()
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(with.created, now().timestamp_millis());
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

        let rule =
            |cname: Option<&str>, uid: Option<u32>, ip: Option<&str>, time: i32| types::CreateKickingRuleRequest {
                appid: app.clone(),
                cname: cname.map(str::to_string),
                uid,
                ip: ip.map(str::to_string),
                time,
                privileges: vec!["join_channel".into()],
            };
        assert_eq!(
            world.create_rule(&rule(Some(""), None, None, 60), now()).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            world.create_rule(&rule(None, Some(0), None, 60), now()).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            world.create_rule(&rule(None, None, Some("0"), 60), now()).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(world.create_rule(&rule(None, None, None, 60), now()).unwrap_err().status, StatusCode::BAD_REQUEST);

        let ban = world.create_rule(&rule(Some("room"), Some(2), None, 5000), now()).unwrap();
        let once = world.create_rule(&rule(None, Some(3), None, 0), now()).unwrap();
        assert!(once > ban, "rule ids increase");
        let rules = world.list_rules(&app, now()).unwrap();
        assert_eq!(rules.len(), 1, "a kick-once rule is not in force");
        assert_eq!(rules[0].ts, timestamp(now() + Duration::minutes(1440)));
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
        assert_eq!(page.total_size, 7);
        let names: Vec<_> = page.channels.iter().map(|c| c.channel_name.as_str()).collect();
        assert_eq!(names, ["c3", "c4", "c5"]);
        assert!(world.list_channels(&app, 0, 501).is_err());
        assert!(world.list_channels(&app, 0, 0).is_err());
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
}
