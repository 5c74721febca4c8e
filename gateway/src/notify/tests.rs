use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::book::{Book, Polled};
use super::event::{Event, Notice, Role};
use super::{Intake, Notifications, signature};
use crate::call::Call;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::operations::Operation;

/// Agora's documented example notice and its signatures with the secret `secret`.
const VECTOR_BODY: &str = r#"{"eventType":10,"noticeId":"4eb720f0-8da7-11e9-a43e-53f411c2761f","notifyMs":1560408533119,"payload":{"a":"1","b":2},"productId":1}"#;
const VECTOR_SHA256: &str = "de96da5acf03b0021ac3b4fa2225e7ae6f3533a30d50bb02c08ea4fa748bda24";
const VECTOR_SHA1: &str = "5a3bb6a6d9fad2ea9ae3fb707a14c9d7f3136df1";
const APPID: &str = "0123456789abcdef0123456789abcdef";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    headers
}

#[test]
fn agoras_signature_vectors_verify_both_ways_and_nothing_else_does() {
    let body = VECTOR_BODY.as_bytes();
    let secret = b"secret";
    assert_eq!(signature::verify(secret, &headers(&[("agora-signature-v2", VECTOR_SHA256)]), body), Ok(()));
    assert_eq!(signature::verify(secret, &headers(&[("agora-signature", VECTOR_SHA1)]), body), Ok(()));
    // Upper-case hex is still the same digest.
    let upper = VECTOR_SHA256.to_uppercase();
    assert_eq!(signature::verify(secret, &headers(&[("agora-signature-v2", &upper)]), body), Ok(()));
    let refused = |pairs: &[(&'static str, &str)], secret: &[u8], body: &[u8]| {
        signature::verify(secret, &headers(pairs), body).unwrap_err()
    };
    assert_eq!(refused(&[], secret, body), signature::Refused::Missing);
    assert_eq!(refused(&[("agora-signature-v2", VECTOR_SHA256)], b"other", body), signature::Refused::Wrong);
    let tampered = VECTOR_BODY.replace("1560408533119", "1560408533120");
    assert_eq!(
        refused(&[("agora-signature-v2", VECTOR_SHA256)], secret, tampered.as_bytes()),
        signature::Refused::Wrong
    );
    assert_eq!(refused(&[("agora-signature-v2", "zz")], secret, body), signature::Refused::NotHex);
    // A V2 that is wrong is not rescued by a right V1.
    let both = [("agora-signature-v2", VECTOR_SHA1), ("agora-signature", VECTOR_SHA1)];
    assert_eq!(refused(&both, secret, body), signature::Refused::Wrong);
}

fn joined(cname: &str, uid: u32, role: Role, seq: i64) -> Event {
    Event::Joined { cname: cname.into(), uid, role, seq, ts: 1_700_000_000 + seq, platform: Some(7) }
}

fn left(cname: &str, uid: u32, seq: i64) -> Event {
    Event::Left { cname: cname.into(), uid, seq }
}

fn users(book: &Book, cname: &str) -> Value {
    book.channel_users(cname, false)["data"].clone()
}

#[test]
fn each_users_events_apply_in_client_seq_order_whatever_order_they_come_in() {
    let now = Instant::now();
    let mut book = Book::default();
    assert!(book.apply(joined("c", 1, Role::Communication, 1), now));
    assert!(book.apply(joined("c", 2, Role::Communication, 2), now));
    // A duplicate, and an older event that comes late, change nothing.
    assert!(!book.apply(joined("c", 1, Role::Communication, 1), now));
    assert!(book.apply(left("c", 2, 5), now));
    assert!(!book.apply(joined("c", 2, Role::Communication, 4), now), "a join older than the leave");
    assert_eq!(users(&book, "c"), json!({ "channel_exist": true, "mode": 1, "total": 1, "users": [1] }));
    // Live: role changes ordered the same way.
    book.apply(joined("live", 7, Role::Audience, 10), now);
    book.apply(Event::RoleChanged { cname: "live".into(), uid: 7, role: Role::Broadcaster, seq: 12 }, now);
    book.apply(Event::RoleChanged { cname: "live".into(), uid: 7, role: Role::Audience, seq: 11 }, now);
    assert_eq!(
        users(&book, "live"),
        json!({ "channel_exist": true, "mode": 2, "broadcasters": [7], "audience_total": 0 })
    );
    let hosts = book.channel_users("live", true)["data"].clone();
    assert_eq!(hosts, json!({ "channel_exist": true, "mode": 2, "broadcasters": [7] }));
    let property = book.user_property(7, "live").unwrap()["data"].clone();
    assert_eq!(property, json!({ "join": 1_700_000_010, "in_channel": true, "role": 2, "uid": 7, "platform": 7 }));
    assert_eq!(book.user_property(8, "live").unwrap()["data"], json!({ "in_channel": false }));
}

#[test]
fn a_leave_that_comes_before_its_join_keeps_the_user_out() {
    let now = Instant::now();
    let mut book = Book::default();
    assert!(!book.apply(left("c", 3, 2), now));
    assert!(!book.apply(joined("c", 3, Role::Communication, 1), now));
    assert_eq!(users(&book, "c"), json!({ "channel_exist": false }));
    // A later session of the same user joins again.
    assert!(book.apply(joined("c", 3, Role::Communication, 3), now));
    assert_eq!(users(&book, "c")["users"], json!([3]));
}

#[test]
fn the_last_leave_or_the_channels_end_removes_the_channel() {
    let now = Instant::now();
    let mut book = Book::default();
    book.apply(joined("a", 1, Role::Broadcaster, 1), now);
    book.apply(joined("b", 2, Role::Communication, 2), now);
    book.apply(left("a", 1, 3), now);
    book.apply(Event::Destroyed { cname: "b".into(), ts: 1_700_000_100 }, now);
    assert_eq!(book.list_channels(0, 100)["data"], json!({ "channels": [], "total_size": 0 }));
}

#[test]
fn a_poll_corrects_what_no_event_touched_since_it_was_sent() {
    let start = Instant::now();
    let mut book = Book::default();
    book.apply(joined("c", 1, Role::Communication, 1), start);
    book.apply(joined("c", 2, Role::Communication, 2), start);
    let sent = start + Duration::from_millis(10);
    // After the poll was sent: user 4 joined (the poll cannot know).
    book.apply(joined("c", 4, Role::Communication, 4), sent + Duration::from_millis(1));
    // Agora: 1 and 3 (user 2's leave was lost, user 3's join was lost).
    let polled =
        Polled { mode: Some(1), users: vec![(1, Role::Communication), (3, Role::Communication)], partial: false };
    let corrections = book.reconcile("c", Some(polled), sent, sent + Duration::from_millis(2));
    assert_eq!(corrections, (2, vec![3]));
    assert_eq!(users(&book, "c")["users"], json!([1, 3, 4]));
    // User 3 came by a poll: its join time is not known, so its property is not answered here...
    assert_eq!(book.user_property(3, "c"), None);
    // ... until Agora's answer about it is learned.
    let property =
        json!({ "success": true, "data": { "in_channel": true, "join": 99, "platform": 2, "role": 1, "uid": 3 } });
    book.learn("c", 3, &property, sent + Duration::from_millis(3));
    assert_eq!(book.user_property(3, "c").unwrap()["data"]["join"], 99);
    // Gone at Agora, untouched since: dropped.
    let later = sent + Duration::from_secs(1);
    assert_eq!(book.reconcile("c", None, later, later), (3, vec![]));
    assert_eq!(users(&book, "c"), json!({ "channel_exist": false }));
}

#[test]
fn the_channel_list_pages_and_reconciles() {
    let now = Instant::now();
    let mut book = Book::default();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        book.apply(joined(name, i as u32 + 1, Role::Communication, i as i64 + 1), now);
    }
    let page = book.list_channels(1, 2)["data"].clone();
    assert_eq!(page, json!({ "channels": [{ "channel_name": "c", "user_count": 1 }], "total_size": 3 }));
    let sent = now + Duration::from_millis(5);
    let (corrections, due) = book.reconcile_list(&[("a".into(), 1), ("b".into(), 2), ("d".into(), 4)], sent);
    assert_eq!(corrections, 1, "c is gone at Agora");
    assert_eq!(due, vec!["b".to_string(), "d".to_string()]);
}

#[test]
fn notices_read_with_their_events_and_name_what_they_lack() {
    let notice = |event_type: i64, payload: Value| -> Result<Event, String> {
        let body =
            json!({ "noticeId": "n", "productId": 1, "eventType": event_type, "notifyMs": 1, "payload": payload });
        serde_json::from_value::<Notice>(body).unwrap().event()
    };
    let payload = json!({ "channelName": "c", "uid": 5, "platform": 1, "clientType": 0, "clientSeq": 9, "ts": 100 });
    let expected =
        Event::Joined { cname: "c".into(), uid: 5, role: Role::Audience, seq: 9, ts: 100, platform: Some(1) };
    assert_eq!(notice(105, payload.clone()), Ok(expected));
    assert_eq!(notice(108, payload), Ok(Event::Left { cname: "c".into(), uid: 5, seq: 9 }));
    assert_eq!(
        notice(107, json!({ "channelName": "c", "uid": 5, "ts": 1 })).unwrap_err(),
        "payload.clientSeq is missing"
    );
    assert_eq!(notice(999, json!({})), Ok(Event::Other));
}

fn notifications() -> Arc<Notifications> {
    let config = format!(
        r#"
        [upstream]
        base_url = "sandbox"
        [[notifications]]
        appid = "{APPID}"
        secret = "secret"
        [[tenants]]
        id = "acme"
        issuer = "https://auth.acme.test"
        audience = "agora-gateway"
        scopes = ["channels:read"]
        keys = [{{ kid = "k", alg = "HS256", secret = "0123456789abcdef0123456789abcdef" }}]
    "#
    );
    let config = Config::parse(&config, std::path::Path::new(".")).unwrap();
    Notifications::new(&config.notifications, None, Arc::new(Metrics::new())).unwrap()
}

/// The body signed as Agora signs it (the sandbox does the same; a build without the sandbox has
/// these tests too).
fn signed(body: &str) -> HeaderMap {
    use hmac::{Hmac, Mac};
    let mut v2 = Hmac::<sha2::Sha256>::new_from_slice(b"secret").unwrap();
    v2.update(body.as_bytes());
    headers(&[("agora-signature-v2", &hex::encode(v2.finalize().into_bytes()))])
}

#[tokio::test]
async fn intake_refuses_forgeries_answers_duplicates_and_serves_only_a_live_project() {
    let notifications = notifications();
    let body = json!({ "noticeId": "n-1", "productId": 1, "eventType": 107, "notifyMs": 1,
        "payload": { "channelName": "c", "uid": 5, "platform": 1, "clientSeq": 1, "ts": 100 } })
    .to_string();
    let forged = headers(&[("agora-signature-v2", &"0".repeat(64))]);
    assert!(notifications.intake(APPID, &forged, body.as_bytes(), None).await.is_err());
    assert!(notifications.intake(APPID, &HeaderMap::new(), body.as_bytes(), None).await.is_err());
    assert!(
        notifications.intake("ffffffffffffffffffffffffffffffff", &signed(&body), body.as_bytes(), None).await.is_err()
    );
    let call = Call::with(Operation::ListChannelUsers, &[("appid", APPID), ("cname", "c")]);
    assert_eq!(notifications.answer(&call), None, "nothing heard yet");
    assert_eq!(notifications.intake(APPID, &signed(&body), body.as_bytes(), None).await.unwrap(), Intake::Accepted);
    assert_eq!(notifications.intake(APPID, &signed(&body), body.as_bytes(), None).await.unwrap(), Intake::Duplicate);
    assert_eq!(notifications.answer(&call), None, "not reconciled with Agora yet");
    let project = notifications.projects().next().unwrap();
    project.set_baselined(Some(notifications.generation()));
    let answer: Value = serde_json::from_slice(&notifications.answer(&call).unwrap().0).unwrap();
    assert_eq!(
        answer,
        json!({ "success": true, "data": { "channel_exist": true, "mode": 1, "total": 1, "users": [5] } })
    );
    let other = Call::with(Operation::ListChannelUsers, &[("appid", "abc"), ("cname", "c")]);
    assert_eq!(notifications.answer(&other), None);
}

#[test]
fn agoras_addresses_let_in_only_their_notices() {
    let addresses = super::allow::AgoraAddresses::default();
    let status = |result: Result<(), crate::error::GatewayError>| result.map_err(|error| error.status().as_u16());
    assert_eq!(status(addresses.admits(Some("127.0.0.1".parse().unwrap()))), Err(503), "not known yet");
    let answer =
        json!({ "data": { "service": { "hosts": [{ "primaryIP": "52.80.192.229" }, { "primaryIP": "::1" }] } } });
    assert_eq!(addresses.take(answer.to_string().as_bytes()), Ok(2));
    assert_eq!(status(addresses.admits(Some("52.80.192.229".parse().unwrap()))), Ok(()));
    assert_eq!(status(addresses.admits(Some("::ffff:52.80.192.229".parse().unwrap()))), Ok(()), "IPv4 as IPv6");
    assert_eq!(status(addresses.admits(Some("52.80.192.230".parse().unwrap()))), Err(403));
    assert_eq!(status(addresses.admits(None)), Err(403), "a listener that does not tell");
    assert!(addresses.take(br#"{"data":{"service":{"hosts":[]}}}"#).is_err(), "an empty list is not taken");
    assert_eq!(status(addresses.admits(Some("::1".parse().unwrap()))), Ok(()), "the last list stays");
}
