//! The export of spans: OTLP/HTTP protobuf through reqwest's blocking client, on the SDK's batch
//! thread, so that a slow or absent collector never holds a request. What never reaches the
//! collector is counted (`trace_spans_dropped_total`): spans refused by a full queue, and the
//! spans of an export that failed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;

/// Spans held for export at most; more are dropped (and counted).
const MAX_QUEUE: usize = 2048;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failing collector is logged at most this often.
const WARN_EVERY_SECS: u64 = 60;

/// The process's span counters (the tracer is the process's, not a gateway's).
pub(crate) struct SpanCounters {
    pub(crate) exported: Counter,
    pub(crate) dropped: Counter,
}

static COUNTERS: LazyLock<SpanCounters> =
    LazyLock::new(|| SpanCounters { exported: Counter::default(), dropped: Counter::default() });

pub(crate) fn spans_counters() -> &'static SpanCounters {
    &COUNTERS
}

/// The batch processor in front of the OTLP exporter at `url`.
pub(super) fn processor(url: &str) -> anyhow::Result<Gate> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|error| anyhow::anyhow!("telemetry.otlp_endpoint: the exporter could not be built: {error}"))?;
    let queued = Arc::new(AtomicUsize::new(0));
    let counted = Counted { inner: exporter, queued: queued.clone(), warned_at: AtomicU64::new(0) };
    let config = BatchConfigBuilder::default().with_max_queue_size(MAX_QUEUE).build();
    Ok(Gate { batch: BatchSpanProcessor::new(counted, config), queued })
}

/// The batch processor, behind a count of the spans it holds: a span that would not fit is
/// dropped here, where it is counted (the SDK's own queue drops silently).
#[derive(Debug)]
pub(super) struct Gate {
    batch: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
}

impl SpanProcessor for Gate {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.batch.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUE {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            COUNTERS.dropped.inc();
            return;
        }
        self.batch.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.batch.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.batch.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.batch.set_resource(resource);
    }
}

/// The exporter, counting what it sent and what it could not.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    /// When a failure was last logged (seconds since the Unix epoch).
    warned_at: AtomicU64,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(count, Ordering::AcqRel);
        match &result {
            Ok(()) => {
                COUNTERS.exported.inc_by(count as u64);
            }
            Err(error) => {
                COUNTERS.dropped.inc_by(count as u64);
                let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
                let last = self.warned_at.load(Ordering::Relaxed);
                if now >= last + WARN_EVERY_SECS
                    && self.warned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
                {
                    tracing::warn!(%error, spans = count, "spans could not be exported to telemetry.otlp_endpoint");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
