//! Kicking rules: created with the documented validation and clamping, listed while in force,
//! updated and deleted; creating one kicks the users it matches out of their channels.

use agora_console_client::{rules, types};
use chrono::{DateTime, Duration, Utc};

use super::{ApiError, ApiResult, World, timestamp};

#[derive(Debug, Clone)]
pub(super) struct RuleRecord {
    id: i64,
    pub(super) appid: String,
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
            appid: Some(self.appid.clone()),
            uid: self.uid,
            opid: Some(self.opid),
            cname: self.cname.clone(),
            ip: self.ip.clone(),
            ts: Some(timestamp(self.expires)),
            create_at: Some(timestamp(self.created)),
            update_at: Some(timestamp(self.updated)),
            extra: Default::default(),
        }
    }
}

/// A rule just created: its ID, and its length in minutes (0: kick once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CreatedRule {
    pub id: i64,
    pub minutes: i64,
}

impl World {
    pub(crate) fn create_rule(
        &mut self,
        request: &types::CreateKickingRuleRequest,
        now: DateTime<Utc>,
    ) -> ApiResult<CreatedRule> {
        self.require_app(&request.appid)?;
        rules::check_kicking_rule(request).map_err(ApiError::bad_request)?;
        // The document lists no rule without a filter; the sandbox refuses one (its own choice).
        if request.cname.is_none() && request.uid.is_none() && request.ip.is_none() {
            return Err(ApiError::bad_request("at least one of cname, uid and ip is needed"));
        }
        let minutes = rules::ban_minutes(request.time.as_ref());
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
            expires: now + Duration::minutes(minutes),
            created: now,
            updated: now,
        };
        self.kick(&rule.appid, rule.cname.as_deref(), rule.uid);
        self.rules.insert(id, rule);
        Ok(CreatedRule { id, minutes })
    }

    /// Rules still in force (a kick-once rule never is).
    pub(crate) fn list_rules(&self, appid: &str, now: DateTime<Utc>) -> ApiResult<Vec<types::KickingRule>> {
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

    pub(crate) fn update_rule(
        &mut self,
        appid: &str,
        id: i64,
        time: Option<&serde_json::Number>,
        now: DateTime<Utc>,
    ) -> ApiResult<types::KickingRuleExpiry> {
        let opid = self.next_opid;
        let rule = self.live_rule_mut(appid, id, now)?;
        rule.expires = now + Duration::minutes(rules::ban_minutes(time));
        rule.updated = now;
        rule.opid = opid;
        let expiry = types::KickingRuleExpiry { id, ts: Some(timestamp(rule.expires)), extra: Default::default() };
        self.next_opid += 1;
        Ok(expiry)
    }

    pub(crate) fn delete_rule(&mut self, appid: &str, id: i64, now: DateTime<Utc>) -> ApiResult<i64> {
        self.live_rule_mut(appid, id, now)?;
        self.rules.remove(&id);
        Ok(id)
    }
}
