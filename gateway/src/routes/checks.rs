//! The documented input rules that the spec's types cannot say (`x-gateway.checks`), run on a call
//! before its body is checked against its type and before any budget is spent.

use agora_console_client::{rules, types};
use chrono::NaiveDate;

use crate::call::Call;
use crate::error::GatewayError;
use crate::policy::Check;

pub(crate) fn run(check: Check, call: &mut Call) -> Result<(), GatewayError> {
    match check {
        Check::IdOrName => {
            if call.get("id").is_none() && call.get("name").is_none() {
                return Err(GatewayError::bad_request("id or name is required"));
            }
            Ok(())
        }
        Check::UsageRange => {
            let date = |name: &str| call.get(name).and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok());
            if let (Some(from), Some(to)) = (date("from_date"), date("to_date")) {
                rules::check_usage_range(from, to).map_err(GatewayError::bad_request)?;
            }
            Ok(())
        }
        Check::KickingRule => {
            let Some(body) = call.body.as_mut() else { return Ok(()) };
            // Agora's own example writes `""` for "not set".
            rules::drop_empty_uid_and_ip(body);
            // A body that does not fit the type is refused next, naming its field.
            if let Ok(rule) = serde_json::from_value::<types::CreateKickingRuleRequest>(body.clone()) {
                rules::check_kicking_rule(&rule).map_err(GatewayError::bad_request)?;
            }
            // Agora's channel-name rule, as for a channel name in a path.
            if let Some(cname) = body.get("cname").and_then(|cname| cname.as_str()).filter(|cname| !cname.is_empty()) {
                rules::check_channel_name(cname)
                    .map_err(|why| GatewayError::bad_request(format!("body field cname: {why}")))?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::operations::Operation;

    fn refusal(check: Check, call: &mut Call) -> String {
        match run(check, call) {
            Err(GatewayError::BadRequest(detail)) => detail,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn usage_ranges_follow_the_document() {
        let range = |from: &str, to: &str| Call::with(Operation::GetUsage, &[("from_date", from), ("to_date", to)]);
        assert!(run(Check::UsageRange, &mut range("2026-01-01", "2026-12-31")).is_ok());
        assert!(refusal(Check::UsageRange, &mut range("2026-02-01", "2026-01-01")).contains("after"));
        assert!(refusal(Check::UsageRange, &mut range("2024-01-01", "2026-01-01")).contains("one year"));
    }

    #[test]
    fn kicking_rules_refuse_only_what_the_document_forbids_and_read_empty_as_unset() {
        let rule = |body: serde_json::Value| {
            let mut call = Call::new(Operation::CreateKickingRule);
            call.body = Some(body);
            call
        };
        assert!(
            refusal(Check::KickingRule, &mut rule(json!({"appid": "a", "uid": 0}))).starts_with("uid must not be 0")
        );
        assert!(refusal(Check::KickingRule, &mut rule(json!({"appid": "a", "cname": ""}))).starts_with("cname"));
        assert!(refusal(Check::KickingRule, &mut rule(json!({"appid": "a", "ip": "0"}))).starts_with("ip"));
        let mut example = rule(json!({"appid": "a", "cname": "c", "uid": "", "ip": "", "time": 60}));
        run(Check::KickingRule, &mut example).unwrap();
        assert_eq!(example.body, Some(json!({"appid": "a", "cname": "c", "time": 60})));
        assert!(run(Check::KickingRule, &mut rule(json!({"appid": "a", "ip": "10.0.0.0/8"}))).is_ok());
        assert!(run(Check::KickingRule, &mut rule(json!({"appid": "a"}))).is_ok(), "no filter: Agora decides");
    }

    #[test]
    fn a_project_is_named_by_id_or_name() {
        assert_eq!(refusal(Check::IdOrName, &mut Call::new(Operation::GetProject)), "id or name is required");
        assert!(run(Check::IdOrName, &mut Call::with(Operation::GetProject, &[("name", "n")])).is_ok());
    }
}
