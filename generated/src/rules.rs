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

/// A ban's length when `time` is left out (document lines 534 and 640: "默认值为 60").
pub const DEFAULT_BAN_MINUTES: i64 = 60;
/// The longest ban, in minutes.
pub const MAX_BAN_MINUTES: i64 = 1440;

/// A kicking rule's length in minutes, as the document describes it: default 60; 0 kicks once
/// (0 stays 0); between 0 and 1 becomes 1, as does anything below 1; above 1440 becomes 1440.
/// Other fractions are rounded down to whole minutes (the document does not say; the sandbox's
/// choice).
pub fn ban_minutes(time: Option<&serde_json::Number>) -> i64 {
    let Some(time) = time.and_then(serde_json::Number::as_f64) else {
        return DEFAULT_BAN_MINUTES;
    };
    if time == 0.0 {
        0
    } else if time < 1.0 {
        1
    } else if time >= MAX_BAN_MINUTES as f64 {
        MAX_BAN_MINUTES
    } else {
        time.floor() as i64
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

/// What the document says a kicking rule must not be (document lines 531-533): `cname` not `""`
/// ("不能设为空字符串"), `uid` not 0 and `ip` not 0 ("不能设为 0"). Nothing stricter: an `ip` that
/// is not a bare address, or a rule with no filter, is Agora's to judge.
pub fn check_kicking_rule(rule: &types::CreateKickingRuleRequest) -> Result<(), String> {
    if rule.cname.as_deref() == Some("") {
        return Err("cname must not be an empty string (document: 不能设为空字符串)".into());
    }
    if rule.uid == Some(0) {
        return Err("uid must not be 0 (document: 不能设为 0)".into());
    }
    if rule.ip.as_deref().is_some_and(|ip| ip.trim() == "0") {
        return Err("ip must not be 0 (document: 不能设为 0)".into());
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

/// `page_size` at most 500 (document: "最大值为 500").
pub fn check_page_size(page_size: u32) -> Result<(), String> {
    if page_size > MAX_PAGE_SIZE {
        return Err(format!("page_size must be at most {MAX_PAGE_SIZE}"));
    }
    Ok(())
}

/// Longest channel name, in bytes (Agora's channel-name rule: "less than 64 bytes").
pub const MAX_CHANNEL_NAME_BYTES: usize = 63;

/// Agora's channel-name character set (its RTC reference, `joinChannel`'s `channelId`): letters,
/// digits, space and `! # $ % & ( ) + - : ; < = . > ? @ [ ] ^ _ { } | ~ ,`, less than 64 bytes.
pub fn check_channel_name(name: &str) -> Result<(), String> {
    const PUNCTUATION: &str = " !#$%&()+-:;<=.>?@[]^_{}|~,";
    if name.is_empty() || name.len() > MAX_CHANNEL_NAME_BYTES {
        return Err(format!("a channel name is 1 to {MAX_CHANNEL_NAME_BYTES} bytes long"));
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii_alphanumeric() && !PUNCTUATION.contains(*c)) {
        return Err(format!(
            "a channel name holds letters, digits, space and {PUNCTUATION:?} only, not {c:?} (Agora's channel-name rule)"
        ));
    }
    Ok(())
}

/// A value that fills a path segment of its own: `.` and `..` would be read as the current or
/// the parent segment by every URL parser on the way, and the call would reach another path.
pub fn check_path_segment(value: &str) -> Result<(), String> {
    match value {
        "" => Err("must not be empty".into()),
        "." | ".." => Err(format!("must not be {value:?} (a dot segment would change the upstream path)")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_and_path_segments_follow_agoras_rules() {
        assert!(check_channel_name("lobby").is_ok());
        assert!(check_channel_name("a b!#$%&()+-:;<=.>?@[]^_{}|~,").is_ok());
        assert!(check_channel_name(&"c".repeat(63)).is_ok());
        assert!(check_channel_name(&"c".repeat(64)).is_err());
        assert!(check_channel_name("").is_err());
        for bad in ["a/b", "a\\b", "a\"b", "ä", "a\nb", "a*b", "a'b"] {
            assert!(check_channel_name(bad).is_err(), "{bad:?}");
        }
        for bad in ["", ".", ".."] {
            assert!(check_path_segment(bad).is_err(), "{bad:?}");
        }
        assert!(check_path_segment("...").is_ok());
        assert!(check_path_segment(".a").is_ok());
    }

    #[test]
    fn ban_length_defaults_to_60_is_clamped_and_zero_kicks_once() {
        let minutes = |value: serde_json::Value| ban_minutes(serde_json::from_value(value).ok().as_ref());
        assert_eq!(ban_minutes(None), 60);
        assert_eq!(minutes(serde_json::json!(0)), 0);
        assert_eq!(minutes(serde_json::json!(0.5)), 1);
        assert_eq!(minutes(serde_json::json!(-5)), 1);
        assert_eq!(minutes(serde_json::json!(60)), 60);
        assert_eq!(minutes(serde_json::json!(90.7)), 90);
        assert_eq!(minutes(serde_json::json!(1440)), 1440);
        assert_eq!(minutes(serde_json::json!(100_000)), 1440);
    }

    #[test]
    fn only_what_the_document_forbids_is_refused() {
        let rule =
            |value: serde_json::Value| -> types::CreateKickingRuleRequest { serde_json::from_value(value).unwrap() };
        assert!(check_kicking_rule(&rule(serde_json::json!({"appid": "a", "cname": ""}))).is_err());
        assert!(check_kicking_rule(&rule(serde_json::json!({"appid": "a", "uid": 0}))).is_err());
        assert!(check_kicking_rule(&rule(serde_json::json!({"appid": "a", "ip": "0"}))).is_err());
        assert!(check_kicking_rule(&rule(serde_json::json!({"appid": "a", "ip": "10.0.0.0/8"}))).is_ok());
        assert!(check_kicking_rule(&rule(serde_json::json!({"appid": "a"}))).is_ok());
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
        assert!(check_page_size(500).is_ok() && check_page_size(0).is_ok());
        assert!(check_page_size(501).is_err());
    }
}
