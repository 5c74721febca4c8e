//! A front of whole answers on each serving thread, after the token's (`auth/front.rs`) and the
//! cache's (`cache/front.rs`): a cache hit's answer as the pipeline made it — for one principal,
//! one operation, one request target — given again without running the pipeline, while nothing it
//! was made from has changed. No handler, call or view is made for it.
//!
//! It answers exactly what the pipeline would:
//! - **Remembered** only when the pipeline made the answer at once (the edge's first poll), from
//!   fresh cache entries alone: the edge arms a [`Capture`] for the poll, the steps report to it
//!   (the principal, each entry read, each cache metric counted, the answer) and anything else —
//!   a fill, a stale or shared answer, an error — spoils it.
//! - **Given again** while the token front gives the same principal (same authenticator, the token
//!   not expired, its JWKS key still in the set), the cache's version is the one read before the
//!   pipeline looked anything up (every change to the cache bumps it: a fill stored, an
//!   invalidation here or from another replica, a purge, a loss of trust), and every entry it read
//!   is still fresh.
//! - **Made again** per request: the age and the `Cache-Status` TTL, the `RateLimit` fields, the
//!   request id, and the metrics the pipeline would have counted (the request, each cache lookup).
//! - **Never** for what the pipeline decides by more than the cache and the token ([`wanted`]):
//!   traced requests, debug logging, `no-cache`, audited operations, channel reads (the notices'
//!   channel state answers those, and it changes without the cache).
//!
//! One request in [`USES`] runs the pipeline again, so that the cache (and its front) still see
//! the keys in use.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use bytes::Bytes;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::cache::Entry;
use crate::error::ProblemReport;
use crate::operations::Operation;
use crate::pipeline;
use crate::policy::CacheClass;
use crate::recent::Recent;
use crate::respond::{Cached, answer_response};
use crate::state::Gateway;

/// Answers remembered per thread (a deployment's services each read a few targets, often).
const SLOTS: usize = 16;

/// Answers a remembered one gives before the pipeline runs again.
const USES: u32 = 32;

/// Whether a request may be answered from, and remembered in, the memo: a read answered from the
/// cache or upstream alone, with no step that looks past them.
pub(crate) fn wanted(gateway: &Gateway, operation: Operation, headers: &HeaderMap, traced: bool) -> bool {
    operation.policy().cache.is_some()
        && !traced
        && !crate::notify::may_answer(operation)
        && !gateway.audit.covers(operation)
        && !crate::edge::logs_requests()
        && !crate::routes::asks_refresh(headers)
}

/// What the edge knows of a request before its first poll: which answer it would be, and the
/// cache's version read before any lookup.
pub(crate) struct Arm {
    operation: Operation,
    target: Box<str>,
    cache: u64,
    version: u64,
}

impl Arm {
    pub(crate) fn new<B>(gateway: &Gateway, operation: Operation, request: &Request<B>) -> Self {
        let (cache, version) = gateway.cache.stamp();
        Self { operation, target: target(request).into(), cache, version }
    }
}

/// What the pipeline reports while the edge polls an armed request.
#[derive(Default)]
struct Capture {
    principal: Option<Arc<Principal>>,
    /// Every cache entry read, with its class: each must stay fresh.
    reads: Vec<(Arc<Entry>, CacheClass)>,
    /// The cache metrics counted (class, result), to count again.
    counted: Vec<(CacheClass, &'static str)>,
    /// The entry the answer is, its class, and the body cut for the principal.
    answer: Option<(Arc<Entry>, CacheClass, Bytes)>,
    spoiled: bool,
}

struct Remembered {
    principal: Arc<Principal>,
    operation: Operation,
    target: Box<str>,
    cache: u64,
    version: u64,
    reads: Vec<(Arc<Entry>, CacheClass)>,
    counted: Vec<(CacheClass, &'static str)>,
    answer: Arc<Entry>,
    class: CacheClass,
    body: Bytes,
    uses: u32,
}

#[cfg(test)]
mod tests;

thread_local! {
    /// Answers given on this thread (the tests tell the memo's from the pipeline's).
    #[cfg(test)]
    static GIVEN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static CAPTURING: RefCell<Option<Capture>> = const { RefCell::new(None) };
    static MEMO: RefCell<Recent<Remembered, SLOTS>> = RefCell::default();
}

fn report(with: impl FnOnce(&mut Capture)) {
    let _ = CAPTURING.try_with(|capturing| {
        if let Some(capture) = capturing.borrow_mut().as_mut() {
            with(capture);
        }
    });
}

/// The request was authenticated as `principal`.
pub(crate) fn authenticated(principal: &Arc<Principal>) {
    report(|capture| capture.principal = Some(principal.clone()));
}

/// A fresh entry of the cache was read.
pub(crate) fn read(entry: &Arc<Entry>, class: CacheClass) {
    report(|capture| capture.reads.push((entry.clone(), class)));
}

/// A cache metric was counted.
pub(crate) fn counted(class: CacheClass, result: &'static str) {
    report(|capture| capture.counted.push((class, result)));
}

/// The answer is `entry` (a hit of `class`), its body cut to `body` for the principal.
pub(crate) fn answered(entry: &Arc<Entry>, class: CacheClass, body: &Bytes) {
    report(|capture| capture.answer = Some((entry.clone(), class, body.clone())));
}

/// Something other than a fresh entry took part: the answer is not remembered.
pub(crate) fn spoil() {
    report(|capture| capture.spoiled = true);
}

/// The edge starts polling an armed request.
pub(crate) fn arm() {
    let _ = CAPTURING.try_with(|capturing| *capturing.borrow_mut() = Some(Capture::default()));
}

/// The poll is over: what was reported.
fn disarm() -> Option<Capture> {
    CAPTURING.try_with(|capturing| capturing.borrow_mut().take()).ok().flatten()
}

/// The edge's first poll of an armed request is over, answered with `response` if it was:
/// remembers the answer if the pipeline made it from fresh entries alone.
pub(crate) fn keep(arm: Arm, response: Option<&Response>) {
    let capture = disarm();
    let (Some(response), Some(capture)) = (response, capture) else { return };
    let Capture { principal: Some(principal), reads, counted, answer: Some((answer, class, body)), spoiled: false } =
        capture
    else {
        return;
    };
    if response.status() != answer.answer.status || response.extensions().get::<ProblemReport>().is_some() {
        return;
    }
    let Arm { operation, target, cache, version } = arm;
    let same = (Arc::as_ptr(&principal), target.clone());
    let remembered =
        Remembered { principal, operation, target, cache, version, reads, counted, answer, class, body, uses: USES };
    let _ = MEMO.try_with(|memo| {
        memo.borrow_mut().put(remembered, |slot| {
            Arc::as_ptr(&slot.principal) == same.0 && slot.operation == operation && slot.target == same.1
        });
    });
}

/// The remembered answer to `request` for `operation`, with its `RateLimit` fields, if there is
/// one that holds; the edge adds its part (`edge.rs`). A panic on the way is the pipeline's to
/// meet: `None`.
/// `now`: the one clock read its decisions take (the token's, the entries' and the budget's).
pub(crate) fn answer<B>(
    gateway: &Gateway,
    operation: Operation,
    request: &Request<B>,
    now: Instant,
) -> Option<(Response, &'static str)> {
    std::panic::catch_unwind(AssertUnwindSafe(|| remembered(gateway, operation, request, now))).ok().flatten()
}

fn remembered<B>(
    gateway: &Gateway,
    operation: Operation,
    request: &Request<B>,
    now: Instant,
) -> Option<(Response, &'static str)> {
    let principal = gateway.auth.load().recall(request.headers().get(header::AUTHORIZATION), now.into_std())?;
    let target = target(request);
    let (cache, version) = gateway.cache.stamp();
    let (answer, class, body) = MEMO
        .try_with(|memo| {
            let mut memo = memo.borrow_mut();
            let same = |slot: &Remembered| {
                Arc::ptr_eq(&slot.principal, &principal) && slot.operation == operation && *slot.target == *target
            };
            let found = memo.find_mut(same)?;
            let holds = found.cache == cache
                && found.version == version
                && found.uses > 0
                && found.reads.iter().all(|(entry, class)| gateway.cache.is_fresh_at(entry, *class, now));
            if !holds {
                // Let go of the entries it holds now (the cache may have let go of them already).
                memo.remove(same);
                return None;
            }
            found.uses -= 1;
            #[cfg(test)]
            GIVEN.with(|given| given.set(given.get() + 1));
            for &(class, result) in &found.counted {
                gateway.cache.count(class, result);
            }
            Some((found.answer.clone(), found.class, found.body.clone()))
        })
        .ok()
        .flatten()?;
    let cached = Cached::hit(answer.age_at(now), gateway.cache.ttl(class));
    let mut response = answer_response(&answer.answer, body, Some(cached));
    pipeline::add_rate_limit(gateway, &principal, operation, &mut response, now.into_std());
    Some((response, principal.tenant.label))
}

/// The request's target as sent: its path and query.
fn target<B>(request: &Request<B>) -> &str {
    request.uri().path_and_query().map_or_else(|| request.uri().path(), |target| target.as_str())
}
