//! agora-sandbox: a faithful, in-memory simulator of Agora's Console RESTful API. It is the gateway's
//! embedded default upstream and the upstream of every test and benchmark, and it counts what
//! reaches it (`GET /__sandbox/stats`), so it is also the ruler of the gateway's throttle.

mod answer;
mod domains;
mod notify;
mod routes;
mod seed;
mod traffic;
mod usage;
mod world;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;

pub use notify::{Delivery, NotifyConfig, NotifyCounts, NotifyFaults, sign};
pub use traffic::{Faults, GroupStats, RateLimitGroup, Stats};

/// How the sandbox answers: as the live service is observed to, or as the document shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// The live service: 201s, `project` objects, extra fields, Kong's `{"message"}` errors.
    #[default]
    Agora,
    /// The Chinese document's shapes: 200s, `{"project": [...]}`, `{"error_msg"}` errors.
    Document,
}

/// Which account the sandbox starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Seed {
    /// Projects, channels in both modes, a kicking rule, usage history.
    Demo,
    /// No projects: for tests that build their own state.
    Empty,
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The only accepted Basic credentials.
    pub customer_id: String,
    pub customer_secret: String,
    /// Requests per sliding second before 429; 0 turns the limit off.
    pub rate_limit: u32,
    /// Operations with a limit of their own (not counted in `rate_limit`).
    pub rate_limit_groups: Vec<RateLimitGroup>,
    /// Latency added to every `/dev` answer.
    pub latency: Duration,
    pub seed: Seed,
    pub flavor: Flavor,
    /// Projects added after the seed (`filler-00001`, ...), for an account of realistic size.
    pub extra_projects: usize,
    /// Send Notifications (NCS) events of the channels, signed, to this URL.
    pub notify: Option<NotifyConfig>,
    /// Every this often, somebody joins or leaves a channel of the demo seed (the demo's
    /// notifications).
    pub activity: Option<Duration>,
}

impl SandboxConfig {
    /// Agora's defaults: 10 requests per second, no added latency, the demo account, live answers.
    pub fn new(customer_id: impl Into<String>, customer_secret: impl Into<String>) -> Self {
        Self {
            customer_id: customer_id.into(),
            customer_secret: customer_secret.into(),
            rate_limit: 10,
            rate_limit_groups: Vec::new(),
            latency: Duration::ZERO,
            seed: Seed::Demo,
            flavor: Flavor::Agora,
            extra_projects: 0,
            notify: None,
            activity: None,
        }
    }
}

/// The sandbox's router (paths with a trailing slash are served too). Called within a Tokio
/// runtime: the notices' sender (if any) is a task of it.
pub fn app(config: &SandboxConfig) -> Router {
    app_of_domains(config, Arc::new(domains::Switches::new(&[])))
}

fn app_of_domains(config: &SandboxConfig, switches: Arc<domains::Switches>) -> Router {
    let mut world = world::World::new(seed::DEMO_SEED);
    if config.seed == Seed::Demo {
        seed::demo(&mut world, chrono::Utc::now());
    }
    seed::fillers(&mut world, config.extra_projects);
    // The seed's channels were there before anyone listened: no notices for them.
    world.take_events();
    let state = Arc::new(routes::SandboxState::new(
        &config.customer_id,
        &config.customer_secret,
        config.flavor,
        world,
        traffic::Traffic::with_groups(config.rate_limit, &config.rate_limit_groups, config.latency),
        config.notify.clone().map(notify::Notifier::start),
        switches,
    ));
    if let Some(every) = config.activity {
        tokio::spawn(routes::activity(Arc::downgrade(&state), every));
    }
    routes::router(state)
}

/// The demo account's projects: name and App ID (the seed is deterministic).
pub fn demo_app_ids() -> Vec<(String, String)> {
    let mut world = world::World::new(seed::DEMO_SEED);
    seed::demo(&mut world, chrono::Utc::now());
    world.list_projects().into_iter().map(|project| (project.name, project.vendor_key)).collect()
}

/// A running sandbox, on a thread and runtime of its own: however busy the process that started
/// it is, requests are taken (and their arrival stamped) as they come, so the sandbox's counters
/// are a ruler independent of what it measures. It may serve as several domains of one account
/// ([`Sandbox::serve_domains`]). Dropping it stops it; [`Sandbox::stop`] also waits until it has
/// stopped.
pub struct Sandbox {
    switches: Arc<domains::Switches>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sandbox {
    /// Binds `listen` (port 0 picks a free port) and serves on its own thread.
    pub async fn start(config: SandboxConfig, listen: SocketAddr) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        Self::serve(config, listener)
    }

    /// Serves on `listener` from a new thread with its own single-threaded runtime.
    pub fn serve(config: SandboxConfig, listener: std::net::TcpListener) -> std::io::Result<Self> {
        Self::serve_domains(config, vec![listener])
    }

    /// Serves one account as several domains, one per listener (domain 0, 1, ...), from a new
    /// thread with its own single-threaded runtime. Each domain can go down and come back on its
    /// own ([`Sandbox::set_domain_up`]).
    pub fn serve_domains(config: SandboxConfig, listeners: Vec<std::net::TcpListener>) -> std::io::Result<Self> {
        let mut addrs = Vec::new();
        for listener in &listeners {
            listener.set_nonblocking(true)?;
            addrs.push(listener.local_addr()?);
        }
        let first = addrs.first().ok_or_else(|| std::io::Error::other("a sandbox needs a listener"))?.port();
        let switches = Arc::new(domains::Switches::new(&addrs));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let stop = watch::Sender::new(false);
        let (domains, stopped) = (switches.clone(), stop.subscribe());
        let thread = std::thread::Builder::new().name(format!("agora-sandbox-{first}")).spawn(move || {
            runtime.block_on(async move {
                let app = NormalizePathLayer::trim_trailing_slash().layer(app_of_domains(&config, domains.clone()));
                let app = Router::new().fallback_service(app);
                let serving: Vec<_> = listeners
                    .into_iter()
                    .enumerate()
                    .map(|(index, listener)| {
                        tokio::spawn(domains::serve(app.clone(), domains.clone(), index, listener, stopped.clone()))
                    })
                    .collect();
                for domain in serving {
                    let _ = domain.await;
                }
            });
            // In-flight requests get two seconds after shutdown; the runtime drops what is left.
            runtime.shutdown_timeout(Duration::from_secs(2));
        })?;
        Ok(Self { switches, stop, thread: Some(thread) })
    }

    /// The first domain's address.
    pub fn addr(&self) -> SocketAddr {
        self.switches.addrs()[0]
    }

    /// The Console API's base URL, as in `https://api.agora.io/dev` (the first domain's).
    pub fn base_url(&self) -> String {
        format!("http://{}/dev", self.addr())
    }

    /// Every domain's base URL, in order.
    pub fn base_urls(&self) -> Vec<String> {
        self.switches.addrs().iter().map(|addr| format!("http://{addr}/dev")).collect()
    }

    /// Where the test hooks live: `{root_url}/__sandbox/stats` and so on (on every domain).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Takes domain `index` down (its listener closes: connections are refused; requests under
    /// way finish) or up again on its address, and waits until it is so.
    pub async fn set_domain_up(&self, index: usize, up: bool) -> Result<(), String> {
        self.switches.set(index, up).await
    }

    /// Stops accepting, lets in-flight requests finish for up to two seconds, then stops.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
