//! The standard fields on every Console answer, as structured fields (RFC 8941): RFC 9211
//! `Cache-Status` — how the gateway's cache took part — and the HTTPAPI working group's
//! `RateLimit-Policy` (the deployment's budget) and `RateLimit` (the caller's lane now). Tools that
//! read them (proxies, SDKs, dashboards) need no knowledge of `X-Cache`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::DEFAULT_GROUP;
use crate::error::GatewayError;

/// The cache's name in `Cache-Status`.
const CACHE: &str = "agora-gateway";

pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub(crate) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub(crate) static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub(crate) static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Why the request went to Agora (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forward {
    /// A read not in the cache.
    UriMiss,
    /// The caller asked for a fresh answer (`Cache-Control: no-cache`).
    Request,
    /// A write: never cached.
    Method,
    /// The copy was stale and Agora failed: the stale copy answers.
    Stale,
}

impl Forward {
    fn token(self) -> &'static str {
        match self {
            Forward::UriMiss => "uri-miss",
            Forward::Request => "request",
            Forward::Method => "method",
            Forward::Stale => "stale",
        }
    }
}

/// One `Cache-Status` member: this cache's part in an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheStatus {
    pub(crate) hit: bool,
    /// Seconds of freshness left (negative: stale by that much).
    pub(crate) ttl: Option<i64>,
    pub(crate) fwd: Option<Forward>,
    /// Agora's status, when the request went to Agora.
    pub(crate) fwd_status: Option<u16>,
    pub(crate) stored: bool,
    /// This request waited for another's upstream call (a coalesced fill).
    pub(crate) collapsed: bool,
    /// `shared` (another replica's fill, through Redis), `events` (Agora's notifications), or why
    /// the gateway answered without Agora.
    pub(crate) detail: Option<&'static str>,
}

/// `agora-gateway; hit; ttl=N` for the first [`HIT_VALUES`] seconds of freshness (the default
/// TTLs' range), made once: the field of most answers, without formatting on the hit path.
const HIT_VALUES: usize = 600;
static HITS: std::sync::LazyLock<Vec<HeaderValue>> =
    std::sync::LazyLock::new(|| (0..HIT_VALUES).map(|ttl| made_once(format!("{CACHE}; hit; ttl={ttl}"))).collect());

/// `Age` values for the same range, made once too.
static AGES: std::sync::LazyLock<Vec<HeaderValue>> =
    std::sync::LazyLock::new(|| (0..HIT_VALUES).map(|age| made_once(age.to_string())).collect());

/// A field value made once for the life of the process: its clones share static bytes, so the
/// threads answering with it never touch a shared reference count.
fn made_once(text: String) -> HeaderValue {
    HeaderValue::from_static(Box::leak(text.into_boxed_str()))
}

/// The `Age` of an answer `seconds` old.
pub(crate) fn age(seconds: u64) -> HeaderValue {
    match usize::try_from(seconds).ok().and_then(|index| AGES.get(index)) {
        Some(value) => value.clone(),
        None => HeaderValue::from(seconds),
    }
}

impl CacheStatus {
    pub(crate) fn value(&self) -> HeaderValue {
        let plain_hit = self.hit
            && self.fwd.is_none()
            && self.fwd_status.is_none()
            && !self.stored
            && !self.collapsed
            && self.detail.is_none();
        if plain_hit && let Some(value) = self.ttl.and_then(|ttl| usize::try_from(ttl).ok()).and_then(|t| HITS.get(t)) {
            return value.clone();
        }
        let mut field = String::with_capacity(48);
        field.push_str(CACHE);
        if self.hit {
            field.push_str("; hit");
        }
        if let Some(ttl) = self.ttl {
            field.push_str("; ttl=");
            field.push_str(&ttl.to_string());
        }
        if let Some(fwd) = self.fwd {
            field.push_str("; fwd=");
            field.push_str(fwd.token());
        }
        if let Some(status) = self.fwd_status {
            field.push_str("; fwd-status=");
            field.push_str(&status.to_string());
        }
        if self.stored {
            field.push_str("; stored");
        }
        if self.collapsed {
            field.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            field.push_str("; detail=");
            field.push_str(detail);
        }
        HeaderValue::from_str(&field).unwrap_or_else(|_| HeaderValue::from_static(CACHE))
    }

    /// The gateway's own refusal or failure: forwarded (`fwd`) only when Agora was reached or tried.
    pub(crate) fn of_error(error: &GatewayError, write: bool) -> Self {
        let fwd = Some(if write { Forward::Method } else { Forward::UriMiss });
        match error {
            GatewayError::Upstream(answer) => {
                CacheStatus { fwd, fwd_status: Some(answer.status.as_u16()), ..Self::default() }
            }
            GatewayError::UpstreamCredentials { status, .. } => {
                CacheStatus { fwd, fwd_status: Some(*status), ..Self::default() }
            }
            GatewayError::BadGateway(_) | GatewayError::GatewayTimeout(_) => {
                CacheStatus { fwd, detail: Some(error.slug()), ..Self::default() }
            }
            _ => CacheStatus { detail: Some(error.slug()), ..Self::default() },
        }
    }
}

/// `RateLimit-Policy: "<budget>";q=<rate>;w=1`: the budget, per second. The default budget's
/// (`"agora"`) are made once per rate, on first use (`throttle.rate` is 1 to 1,000); a group's are
/// made each time.
pub(crate) fn policy(budget: &str, rate: u32) -> HeaderValue {
    static POLICIES: [std::sync::OnceLock<HeaderValue>; 1001] = [const { std::sync::OnceLock::new() }; 1001];
    let made = || made_once(format!("\"{budget}\";q={rate};w=1"));
    match POLICIES.get(rate as usize).filter(|_| budget == DEFAULT_GROUP) {
        Some(cell) => cell.get_or_init(made).clone(),
        None => made(),
    }
}

/// The default budget's `RateLimit` values made once: `r` below this, `t` below [`RESETS`].
const REMAINING: u64 = 128;
const RESETS: u64 = 16;
static RATE_LIMITS: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
    (0..REMAINING * RESETS).map(|n| made_once(format!("\"agora\";r={};t={}", n / RESETS, n % RESETS))).collect()
});

/// `RateLimit: "<budget>";r=<remaining>;t=<seconds>`: how many more requests the caller's lane may
/// have waiting for a slot of the budget now, and in how many seconds its next slot comes.
pub(crate) fn rate_limit(budget: &str, remaining: u64, reset_seconds: u64) -> HeaderValue {
    if budget == DEFAULT_GROUP && remaining < REMAINING && reset_seconds < RESETS {
        return RATE_LIMITS[(remaining * RESETS + reset_seconds) as usize].clone();
    }
    HeaderValue::from_str(&format!("\"{budget}\";r={remaining};t={reset_seconds}"))
        .unwrap_or_else(|_| HeaderValue::from_static("\"agora\""))
}

/// A tenant's `RateLimit` (`r`, `t`), reused for [`MEMO_FOR_MS`] before it is worked out again (that
/// takes the throttle's lock): one word, so that a cache hit reads it with one atomic load — valid
/// (bit 63), when (ms since [`CLOCK_ZERO`], wrapping, bits 31..63), `r` (20 bits), `t` (11 bits).
/// The throttle forgets it whenever it admits or refuses one of the tenant's requests: only the
/// budget's own pace (another tenant's share, the clock) may be up to 50 ms old in it, never the
/// tenant's own lane — a 429 says the lane is full.
#[derive(Debug, Default)]
pub(crate) struct RateLimitMemo(AtomicU64);

const MEMO_FOR_MS: u64 = 50;
static CLOCK_ZERO: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn memo_ms(now: Instant) -> u64 {
    (now.saturating_duration_since(*CLOCK_ZERO).as_millis() as u64) & 0xFFFF_FFFF
}

impl RateLimitMemo {
    /// `(r, t)` if worked out less than [`MEMO_FOR_MS`] before `now`.
    pub(crate) fn get(&self, now: Instant) -> Option<(u64, u64)> {
        let memo = self.0.load(Ordering::Relaxed);
        let age = memo_ms(now).wrapping_sub((memo >> 31) & 0xFFFF_FFFF) & 0xFFFF_FFFF;
        (memo >> 63 == 1 && age < MEMO_FOR_MS).then_some(((memo >> 11) & 0xF_FFFF, memo & 0x7FF))
    }

    /// Keeps `(r, t)` as of `now` (each capped to its bits), and answers what it kept.
    pub(crate) fn set(&self, now: Instant, (remaining, reset): (u64, u64)) -> (u64, u64) {
        let (remaining, reset) = (remaining.min(0xF_FFFF), reset.min(0x7FF));
        self.0.store(1 << 63 | memo_ms(now) << 31 | remaining << 11 | reset, Ordering::Relaxed);
        (remaining, reset)
    }

    /// The lane changed: the next answer works `(r, t)` out again.
    pub(crate) fn forget(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// Sets `Cache-Status` unless the answer has one already.
pub(crate) fn set_cache_status(headers: &mut HeaderMap, status: CacheStatus) {
    if !headers.contains_key(&CACHE_STATUS) {
        headers.insert(CACHE_STATUS.clone(), status.value());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape parses as an RFC 8941 list of one member, the cache's token with its parameters.
    #[test]
    fn the_fields_are_structured_fields() {
        let shapes = [
            CacheStatus { hit: true, ttl: Some(12), ..Default::default() },
            CacheStatus { hit: true, ttl: Some(4000), detail: Some("shared"), ..Default::default() },
            CacheStatus { fwd: Some(Forward::UriMiss), fwd_status: Some(200), stored: true, ..Default::default() },
            CacheStatus { fwd: Some(Forward::UriMiss), fwd_status: Some(200), collapsed: true, ..Default::default() },
            CacheStatus {
                hit: true,
                ttl: Some(-3),
                fwd: Some(Forward::Stale),
                fwd_status: Some(503),
                ..Default::default()
            },
            CacheStatus { detail: Some("throttled"), ..Default::default() },
        ];
        let expected = [
            "agora-gateway; hit; ttl=12",
            "agora-gateway; hit; ttl=4000; detail=shared",
            "agora-gateway; fwd=uri-miss; fwd-status=200; stored",
            "agora-gateway; fwd=uri-miss; fwd-status=200; collapsed",
            "agora-gateway; hit; ttl=-3; fwd=stale; fwd-status=503",
            "agora-gateway; detail=throttled",
        ];
        for (shape, expected) in shapes.iter().zip(expected) {
            let value = shape.value();
            assert_eq!(value.to_str().unwrap(), expected);
            let list: sfv::List = sfv::Parser::new(expected).parse().unwrap();
            assert_eq!(list.len(), 1, "{expected}");
        }
        for value in [policy("agora", 10), rate_limit("agora", 3, 1), policy("channel-queries", 20)] {
            let list: sfv::List = sfv::Parser::new(value.to_str().unwrap()).parse().unwrap();
            assert_eq!(list.len(), 1);
        }
        assert_eq!(rate_limit("agora", 3, 1).to_str().unwrap(), "\"agora\";r=3;t=1");
        assert_eq!(rate_limit("agora", 127, 15).to_str().unwrap(), "\"agora\";r=127;t=15");
        assert_eq!(rate_limit("agora", 5000, 2).to_str().unwrap(), "\"agora\";r=5000;t=2");
        assert_eq!(policy("agora", 10).to_str().unwrap(), "\"agora\";q=10;w=1");
        assert_eq!(policy("agora", 10), policy("agora", 10));
        // A group's fields name the group.
        assert_eq!(policy("channel-queries", 20).to_str().unwrap(), "\"channel-queries\";q=20;w=1");
        assert_eq!(rate_limit("channel-queries", 3, 1).to_str().unwrap(), "\"channel-queries\";r=3;t=1");
    }

    #[test]
    fn the_rate_limit_memo_keeps_its_values_for_50_ms() {
        let memo = RateLimitMemo::default();
        let _ = memo_ms(Instant::now()); // the memo's clock started before `now`
        let now = Instant::now();
        assert_eq!(memo.get(now), None, "nothing yet");
        assert_eq!(memo.set(now, (42, 3)), (42, 3));
        assert_eq!(memo.get(now + std::time::Duration::from_millis(49)), Some((42, 3)));
        assert_eq!(memo.get(now + std::time::Duration::from_millis(50)), None);
        assert_eq!(memo.set(now, (5_000_000, 90_000)), (0xF_FFFF, 0x7FF), "capped to its bits");
        assert_eq!(memo.get(now), Some((0xF_FFFF, 0x7FF)));
        memo.forget();
        assert_eq!(memo.get(now), None, "forgotten");
        assert_eq!(
            (age(0), age(599), age(86_400)),
            (HeaderValue::from(0), HeaderValue::from(599), HeaderValue::from(86_400))
        );
    }
}
