//! The sandbox's in-memory Console account: projects (here, with usage), kicking rules
//! (`kicking.rs`) and online channels (`channels.rs`), with the rules Agora documents for each
//! operation. Pure state: no HTTP, and time is always passed in.

mod channels;
mod kicking;

use channels::Channel;
pub(crate) use channels::{ChannelEvent, ChannelMembers, Mode, UserState, missing_channel};
pub(crate) use kicking::CreatedRule;
use kicking::RuleRecord;

use std::collections::BTreeMap;

use agora_console_client::rules;
use agora_console_client::types;
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use crate::usage;

/// An answer other than 200, with Agora's `{"error_msg": ...}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// Agora's documented 404, typo included.
    pub(crate) fn project_not_found() -> Self {
        Self { status: StatusCode::NOT_FOUND, message: "project not exit".into() }
    }

    pub(crate) fn rule_not_found() -> Self {
        Self { status: StatusCode::NOT_FOUND, message: "rule not exist".into() }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Clone)]
pub(crate) struct ProjectRecord {
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
    pub(crate) fn to_api(&self) -> types::Project {
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
            status: Some(i64::from(self.enabled)),
            created: Some(self.created_ms),
            company_id: None,
            extra: Default::default(),
        }
    }
}

/// Agora's timestamp format: `2018-01-09T07:23:06.000Z`.
pub(crate) fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) struct World {
    rng: fastrand::Rng,
    projects: Vec<ProjectRecord>,
    rules: BTreeMap<i64, RuleRecord>,
    next_rule_id: i64,
    next_opid: i64,
    /// Online channels by app ID, then by channel name.
    channels: BTreeMap<String, BTreeMap<String, Channel>>,
    /// Channel events not yet taken for delivery (`take_events`).
    events: Vec<ChannelEvent>,
    /// The last `clientSeq` given: one counter, so each user's events are ordered.
    next_seq: i64,
}

impl World {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            projects: Vec::new(),
            rules: BTreeMap::new(),
            next_rule_id: 1,
            next_opid: 1,
            channels: BTreeMap::new(),
            events: Vec::new(),
            next_seq: 0,
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

    pub(crate) fn create_project(
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

    pub(crate) fn list_projects(&self) -> Vec<types::Project> {
        self.projects.iter().map(ProjectRecord::to_api).collect()
    }

    pub(crate) fn get_project(&self, id: Option<&str>, name: Option<&str>) -> ApiResult<types::Project> {
        if id.is_none() && name.is_none() {
            return Err(ApiError::bad_request("id or name is required"));
        }
        self.projects
            .iter()
            .find(|p| id.is_none_or(|id| p.id == id) && name.is_none_or(|name| p.name == name))
            .map(ProjectRecord::to_api)
            .ok_or_else(ApiError::project_not_found)
    }

    pub(crate) fn set_project_status(&mut self, id: &str, enabled: bool) -> ApiResult<types::Project> {
        let project = self.project_mut(id)?;
        project.enabled = enabled;
        Ok(project.to_api())
    }

    pub(crate) fn delete_project(&mut self, id: &str) -> ApiResult<()> {
        let index = self.projects.iter().position(|p| p.id == id).ok_or_else(ApiError::project_not_found)?;
        let removed = self.projects.remove(index);
        self.channels.remove(&removed.vendor_key);
        self.rules.retain(|_, rule| rule.appid != removed.vendor_key);
        Ok(())
    }

    pub(crate) fn set_recording_config(&mut self, id: &str, recording_server: &str) -> ApiResult<()> {
        if recording_server.trim().is_empty() {
            return Err(ApiError::bad_request("recording_server must not be empty"));
        }
        self.enabled_project_mut(id)?.recording_server = recording_server.to_string();
        Ok(())
    }

    pub(crate) fn enable_sign_key(&mut self, id: &str, enable: bool) -> ApiResult<()> {
        let fresh = self.hex(32);
        let project = self.enabled_project_mut(id)?;
        if enable && project.sign_key.is_none() {
            project.sign_key = Some(fresh);
        }
        project.sign_key_enabled = enable;
        Ok(())
    }

    pub(crate) fn reset_sign_key(&mut self, id: &str) -> ApiResult<()> {
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
    pub(crate) fn usage_v1(
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
                extra: Default::default(),
            })
            .collect();
        Ok(types::UsageV1Response { usages, extra: Default::default() })
    }

    pub(crate) fn usage_v3(
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

    /// Inserts a project as it stood at some past time (the demo seed).
    pub(crate) fn insert_project(
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
mod tests;
