//! The spec against itself and the generated types: its operations, its references, and every example
//! deserializing into the generated type and serializing back to the same JSON.

use serde_json::Value;

use crate::types;

const SPEC: &str = include_str!("../../openapi/agora-console.yaml");

fn spec() -> Value {
    serde_yaml_ng::from_str(SPEC).expect("the spec is YAML")
}

/// The operations of the Console API: the 17 of the project's design, the hosts-only user list of
/// Agora's English reference, and the addresses of Agora's Notifications service.
const OPERATION_IDS: [&str; 19] = [
    "create_project",
    "list_projects",
    "get_project",
    "set_project_status",
    "delete_project",
    "set_recording_config",
    "enable_sign_key",
    "reset_sign_key",
    "get_usage",
    "get_usage_v3",
    "create_kicking_rule",
    "list_kicking_rules",
    "update_kicking_rule",
    "delete_kicking_rule",
    "get_user_property",
    "list_channel_users",
    "list_channels",
    "get_ncs_ips",
    "list_channel_hosts",
];

fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
    for (path, item) in spec["paths"].as_object().expect("paths") {
        // A path item also holds `servers`, `parameters`, ...: only its methods are operations.
        for (method, operation) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                found.push((method.clone(), path.clone(), operation.clone()));
            }
        }
    }
    found
}

#[test]
fn spec_is_openapi_3_0_and_holds_its_operations() {
    let parsed: openapiv3::OpenAPI = serde_yaml_ng::from_str(SPEC).expect("the spec parses as OpenAPI 3.0");
    assert!(parsed.openapi.starts_with("3.0."), "progenitor reads 3.0.x only");
    let spec = spec();
    let mut ids: Vec<String> = operations(&spec)
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().expect("every operation has an operationId").to_string())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = OPERATION_IDS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[test]
fn every_operation_takes_any_2xx_and_documents_every_error_with_one_schema() {
    let spec = spec();
    for (method, path, operation) in operations(&spec) {
        for status in ["400", "401", "404", "429", "500", "4XX", "5XX"] {
            let response = &operation["responses"][status];
            assert!(response.is_object(), "{method} {path} lacks a {status} response");
            let target = resolve(&spec, response);
            assert_eq!(
                target["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                "{method} {path} {status} must use ErrorBody (progenitor takes one error schema)"
            );
        }
        let successes: Vec<_> =
            operation["responses"].as_object().unwrap().keys().filter(|status| status.starts_with('2')).collect();
        assert_eq!(successes, ["2XX"], "{method} {path}: any 2xx is success (the live service answers 201 too)");
    }
}

#[test]
fn every_object_schema_keeps_the_fields_it_does_not_know() {
    let spec = spec();
    for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
        if schema["type"] == "object" {
            assert_eq!(schema["additionalProperties"], serde_json::json!({}), "{name} must keep unknown fields");
        }
    }
    let live = serde_json::json!({
        "projects": [{"id": "Hk12QqzrB", "name": "a", "vendor_key": "k", "sign_key": "", "recording_server": null,
                      "created": 1_700_000_000_000_i64, "company_id": 7, "region": {"zone": "cn"}}],
        "next": null
    });
    let typed: types::ProjectList = serde_json::from_value(live).unwrap();
    assert_eq!(typed.projects[0].company_id, Some(7));
    assert_eq!(typed.projects[0].extra["region"], serde_json::json!({"zone": "cn"}));
    assert_eq!(typed.extra["next"], Value::Null);
}

#[test]
fn project_answers_come_as_an_object_or_a_one_element_array() {
    let project = serde_json::json!({"id": "p", "name": "n", "vendor_key": "k", "company_id": 1});
    for body in [serde_json::json!({"project": project}), serde_json::json!({"project": [project]})] {
        let typed: types::ProjectResponse = serde_json::from_value(body).unwrap();
        assert_eq!(typed.project.projects().len(), 1);
        assert_eq!(typed.project.projects()[0].id, "p");
    }
    let write: types::ProjectWriteResponse = serde_json::from_value(serde_json::json!({"success": true})).unwrap();
    assert_eq!((write.success, write.project), (Some(true), None));
}

#[test]
fn errors_decode_in_either_shape() {
    for body in [serde_json::json!({"message": "invalid appid"}), serde_json::json!({"error_msg": "project not exit"})]
    {
        let typed: types::ErrorBody = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), body);
    }
}

#[test]
fn every_reference_resolves() {
    let spec = spec();
    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(refs.len() > 50, "the spec uses references throughout");
    for reference in refs {
        let target = pointer(&spec, &reference);
        assert!(target.is_some(), "unresolved reference {reference}");
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "$ref" {
                    out.push(child.as_str().expect("$ref is a string").to_string());
                } else {
                    collect_refs(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, out)),
        _ => {}
    }
}

fn pointer<'a>(spec: &'a Value, reference: &str) -> Option<&'a Value> {
    spec.pointer(reference.strip_prefix('#')?)
}

fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => pointer(spec, reference).expect("reference resolves"),
        None => value,
    }
}

/// Deserializes `example` as the generated type of schema `name` and serializes it back.
fn round_trip(name: &str, example: &Value) -> Result<Value, String> {
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(example: &Value) -> Result<Value, String> {
        let typed: T = serde_json::from_value(example.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }
    match name {
        "ErrorBody" => through::<types::ErrorBody>(example),
        "ProjectWriteResponse" => through::<types::ProjectWriteResponse>(example),
        "ProjectOrList" => through::<types::ProjectOrList>(example),
        "SuccessResponse" => through::<types::SuccessResponse>(example),
        "Project" => through::<types::Project>(example),
        "ProjectList" => through::<types::ProjectList>(example),
        "ProjectResponse" => through::<types::ProjectResponse>(example),
        "CreateProjectRequest" => through::<types::CreateProjectRequest>(example),
        "ProjectIdRequest" => through::<types::ProjectIdRequest>(example),
        "SetProjectStatusRequest" => through::<types::SetProjectStatusRequest>(example),
        "SetRecordingConfigRequest" => through::<types::SetRecordingConfigRequest>(example),
        "EnableSignKeyRequest" => through::<types::EnableSignKeyRequest>(example),
        "UsageV1Response" => through::<types::UsageV1Response>(example),
        "DailyUsage" => through::<types::DailyUsage>(example),
        "UsageV3Response" => through::<types::UsageV3Response>(example),
        "UsageMetric" => through::<types::UsageMetric>(example),
        "CreateKickingRuleRequest" => through::<types::CreateKickingRuleRequest>(example),
        "KickingRuleCreated" => through::<types::KickingRuleCreated>(example),
        "KickingRule" => through::<types::KickingRule>(example),
        "KickingRuleList" => through::<types::KickingRuleList>(example),
        "UpdateKickingRuleRequest" => through::<types::UpdateKickingRuleRequest>(example),
        "KickingRuleUpdated" => through::<types::KickingRuleUpdated>(example),
        "DeleteKickingRuleRequest" => through::<types::DeleteKickingRuleRequest>(example),
        "KickingRuleDeleted" => through::<types::KickingRuleDeleted>(example),
        "UserPropertyResponse" => through::<types::UserPropertyResponse>(example),
        "ChannelUsersResponse" => through::<types::ChannelUsersResponse>(example),
        "ChannelListResponse" => through::<types::ChannelListResponse>(example),
        "NcsIpResponse" => through::<types::NcsIpResponse>(example),
        other => Err(format!("no generated type is mapped for schema {other}: add it to round_trip()")),
    }
}

/// Every example of the spec, with the schema it illustrates: schema-level `example`s and the
/// `examples` of request bodies and responses.
fn examples(spec: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
        if let Some(example) = schema.get("example") {
            found.push((format!("components.schemas.{name}.example"), name.clone(), example.clone()));
        }
    }
    let mut media_types = Vec::new();
    for (method, path, operation) in operations(spec) {
        if let Some(body) = operation.get("requestBody") {
            media_types.push((format!("{method} {path} request"), body["content"]["application/json"].clone()));
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            if response.get("$ref").is_none() {
                media_types
                    .push((format!("{method} {path} {status}"), response["content"]["application/json"].clone()));
            }
        }
    }
    for (name, response) in spec["components"]["responses"].as_object().unwrap() {
        media_types.push((format!("components.responses.{name}"), response["content"]["application/json"].clone()));
    }
    for (place, media) in media_types {
        let Some(examples) = media.get("examples").and_then(Value::as_object) else {
            continue;
        };
        let schema = media["schema"]["$ref"].as_str().expect("media schemas are references");
        let name = schema.rsplit('/').next().unwrap().to_string();
        for (example_name, example) in examples {
            found.push((format!("{place} example {example_name}"), name.clone(), example["value"].clone()));
        }
    }
    found
}

#[test]
fn every_example_round_trips_through_the_generated_types() {
    let spec = spec();
    let examples = examples(&spec);
    assert!(examples.len() >= 30, "found only {} examples", examples.len());
    let mut failures = Vec::new();
    for (place, schema, example) in &examples {
        // An optional field that is `null` comes back left out: the same to every reader.
        match round_trip(schema, example) {
            Ok(back) if without_nulls(&back) == without_nulls(example) => {}
            Ok(back) => failures.push(format!("{place} ({schema}): came back as {back}, not {example}")),
            Err(error) => failures.push(format!("{place} ({schema}): {error}")),
        }
    }
    assert!(failures.is_empty(), "examples that do not round-trip:\n{}", failures.join("\n"));
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[test]
fn the_documented_kicking_rule_example_with_empty_uid_is_refused_by_the_types() {
    // The spec types `uid` as an integer (see the spec's description); "" is not one.
    let documented = serde_json::json!({
        "appid": "4855xxxxxxxxxxxxxxxxxxxxxxxxeae2", "cname": "channel1", "uid": "", "ip": "",
        "time": 60, "privileges": ["join_channel"]
    });
    assert!(serde_json::from_value::<types::CreateKickingRuleRequest>(documented).is_err());
}

#[test]
fn inputs_out_of_the_documented_range_are_refused_and_answers_are_not() {
    // Inputs: the document lists the only valid values.
    assert!(serde_json::from_value::<types::ProjectStatus>(serde_json::json!(2)).is_err());
    assert!(serde_json::from_value::<types::UsageBusiness>(serde_json::json!("video")).is_err());
    // Answers: a role, mode or platform the document does not list still decodes.
    let user: types::UserProperty =
        serde_json::from_value(serde_json::json!({"in_channel": true, "role": 9, "platform": 42})).unwrap();
    assert_eq!((user.role, user.platform), (Some(9), Some(42)));
    let users: types::ChannelUsers =
        serde_json::from_value(serde_json::json!({"channel_exist": true, "mode": 3})).unwrap();
    assert_eq!(users.mode, Some(3));
}

#[test]
fn a_ban_length_goes_on_as_written() {
    for time in [serde_json::json!(60), serde_json::json!(0.5), serde_json::json!(0)] {
        let body = serde_json::json!({"appid": "a", "cname": "c", "time": time});
        let typed: types::CreateKickingRuleRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap()["time"], time);
    }
    let without: types::UpdateKickingRuleRequest =
        serde_json::from_value(serde_json::json!({"appid": "a", "id": 1})).unwrap();
    assert_eq!(without.time, None, "left out, Agora's default (60) applies");
}
