//! Audit events: their targets, their one line, their file.

use serde_json::json;

use std::collections::BTreeMap;

use super::*;
use crate::call::Call;

#[test]
fn targets_name_identifiers_never_bodies() {
    let mut call = Call::new(Operation::UpdateKickingRule);
    call.body = Some(json!({"appid": "app-1", "id": 1953, "time": 60}));
    let target = target_of(&call);
    assert_eq!(target, BTreeMap::from([("app".into(), "app-1".into()), ("rule".into(), "1953".into())]));
    let mut call = Call::new(Operation::SetRecordingConfig);
    call.body = Some(json!({"id": "p1", "recording_server": "10.0.0.1:80"}));
    assert_eq!(target_of(&call), BTreeMap::from([("project".into(), "p1".into())]));
}

#[test]
fn a_caller_cannot_end_the_line_or_a_column() {
    let mut event = Event::new("set_project_status");
    event.tenant = Some("acme".into());
    event.subject = Some("svc\n2026-01-01T00:00:00.000Z globex admin delete_project [project=p] 200 ok".into());
    event.target.insert("project".into(), "p1\r\nforged | column\u{2028}".into());
    event.reason = Some("why\u{1b}[2J".into());
    let line = event.summary();
    assert!(!line.contains(['\n', '\r', '\u{2028}', '\u{1b}']), "{line}");
    assert!(line.contains("svc\\n2026"), "{line}");
    assert!(line.contains("p1\\r\\nforged \\| column"), "{line}");
    assert_eq!(escaped("plain-text_1"), "plain-text_1");
    assert_eq!(escaped("a\\b"), "a\\\\b", "escapes cannot be forged either");
}

#[test]
fn events_round_trip_through_a_file_and_filter() {
    let dir = std::env::temp_dir().join(format!("agora-audit-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let config = AuditConfig { sink: AuditSink::File, path: Some(path.clone()), reads: false };
    let audit = Audit::new(&config, Arc::new(Metrics::new())).unwrap();
    for (tenant, operation) in [("acme", "create_project"), ("globex", "delete_kicking_rule")] {
        let mut event = Event::new(operation);
        event.tenant = Some(tenant.into());
        event.status = 201;
        event.outcome = Outcome::Ok;
        audit.record(&event);
    }
    std::fs::write(dir.join("other"), "").unwrap();
    // The file's writer is a thread of its own: the events land a moment later.
    for _ in 0..200 {
        if read(&path, None, None, None).unwrap().0.len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (events, unreadable) = read(&path, Some("globex"), None, None).unwrap();
    assert_eq!((events.len(), unreadable, events[0].operation.as_str()), (1, 0, "delete_kicking_rule"));
    let (events, _) = read(&path, None, Some(Utc::now() + chrono::Duration::hours(1)), None).unwrap();
    assert!(events.is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_scope_dropped_before_its_end_still_leaves_its_event() {
    // An admin action or a request cut off by the edge's deadline, or by the caller going away.
    let dir = std::env::temp_dir().join(format!("agora-audit-drop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let config = AuditConfig { sink: AuditSink::File, path: Some(path.clone()), reads: false };
    let audit = Arc::new(Audit::new(&config, Arc::new(Metrics::new())).unwrap());
    let scope = AuditScope::start(&audit, "reload", Some("cut-off".into()), true);
    drop(scope);
    let mut events = Vec::new();
    for _ in 0..200 {
        events = read(&path, None, None, None).unwrap().0;
        if !events.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].operation.as_str(), events[0].outcome), ("reload", Outcome::Unknown));
    assert_eq!(events[0].request_id.as_deref(), Some("cut-off"));
    std::fs::remove_dir_all(dir).unwrap();
}
