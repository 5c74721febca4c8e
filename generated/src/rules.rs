//! The Console API's documented input rules, beyond what the types say. The sandbox enforces them
//! as Agora does; the gateway checks them before spending upstream budget on a request Agora
//! would refuse.

use chrono::NaiveDate;

use crate::types;

/// Longest usage range, in days, both ends included ("one year").
pub const MAX_USAGE_DAYS: i64 = 366;
/// `page_size` of the channel list: default and maximum.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 500;
/// The live-mode user list names at most this many audience members.
pub const MAX_AUDIENCE_LISTED: usize = 10_000;

/// A kicking rule's length: `time` minutes clamped to [1, 1440], except 0 (kick once).
pub fn clamp_ban_minutes(time: i32) -> i32 {
    match time {
        0 => 0,
        t if t < 1 => 1,
        t => t.min(1440),
    }
}

/// Agora's own example sends `"uid": ""` and `"ip": ""` for "not set": read them so.
pub fn drop_empty_uid_and_ip(body: &mut serde_json::Value) {
    if let Some(object) = body.as_object_mut() {
        for field in ["uid", "ip"] {
            if object.get(field).is_some_and(|value| value == "") {
                object.remove(field);
            }
        }
    }
}

/// `cname` not `""`, `uid` not 0, `ip` an address and not `"0"`, and at least one of the three.
pub fn check_kicking_rule(rule: &types::CreateKickingRuleRequest) -> Result<(), String> {
    if rule.cname.as_deref() == Some("") {
        return Err("cname must not be an empty string".into());
    }
    if rule.uid == Some(0) {
        return Err("uid must not be 0".into());
    }
    if let Some(ip) = &rule.ip
        && (ip == "0" || ip.parse::<std::net::IpAddr>().is_err())
    {
        return Err(format!("ip {ip:?} is not an IP address"));
    }
    if rule.cname.is_none() && rule.uid.is_none() && rule.ip.is_none() {
        return Err("at least one of cname, uid and ip is needed".into());
    }
    Ok(())
}

/// `from_date` not after `to_date`, and at most a year between them.
pub fn check_usage_range(from: NaiveDate, to: NaiveDate) -> Result<(), String> {
    if from > to {
        return Err("from_date must not be after to_date".into());
    }
    if (to - from).num_days() + 1 > MAX_USAGE_DAYS {
        return Err(format!("the range from_date..to_date may span at most one year ({MAX_USAGE_DAYS} days)"));
    }
    Ok(())
}

pub fn check_page_size(page_size: u32) -> Result<(), String> {
    if page_size == 0 || page_size > MAX_PAGE_SIZE {
        return Err(format!("page_size must be between 1 and {MAX_PAGE_SIZE}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_length_is_clamped_and_zero_kicks_once() {
        assert_eq!(clamp_ban_minutes(0), 0);
        assert_eq!(clamp_ban_minutes(-5), 1);
        assert_eq!(clamp_ban_minutes(60), 60);
        assert_eq!(clamp_ban_minutes(1440), 1440);
        assert_eq!(clamp_ban_minutes(100_000), 1440);
    }

    #[test]
    fn empty_uid_and_ip_mean_not_set() {
        let mut body = serde_json::json!({"appid": "a", "cname": "c", "uid": "", "ip": ""});
        drop_empty_uid_and_ip(&mut body);
        assert_eq!(body, serde_json::json!({"appid": "a", "cname": "c"}));
    }

    #[test]
    fn ranges_and_pages() {
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert!(check_usage_range(day("2026-01-01"), day("2026-12-31")).is_ok());
        assert!(check_usage_range(day("2025-01-01"), day("2026-01-02")).is_err());
        assert!(check_usage_range(day("2026-01-02"), day("2026-01-01")).is_err());
        assert!(check_page_size(500).is_ok());
        assert!(check_page_size(501).is_err() && check_page_size(0).is_err());
    }
}
