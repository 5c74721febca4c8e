//! `agora-sandbox`: run the Console API simulator on its own.

use std::net::SocketAddr;
use std::time::Duration;

use agora_sandbox::{Flavor, NotifyConfig, RateLimitGroup, Sandbox, SandboxConfig, Seed};
use clap::Parser;

/// An in-memory simulator of Agora's Console RESTful API.
#[derive(Parser)]
#[command(name = "agora-sandbox", version)]
struct Args {
    /// Address to listen on. Given several times, the sandbox serves as that many domains of one
    /// account (primary, alternate, regional), each of which can go down on its own
    /// (`POST /__sandbox/domains/{n}` with `{"up": false}`).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: Vec<SocketAddr>,
    /// Customer ID accepted as the Basic user name.
    #[arg(long, env = "AGORA_CUSTOMER_ID")]
    customer_id: String,
    /// Customer secret accepted as the Basic password.
    #[arg(long, env = "AGORA_CUSTOMER_SECRET", hide_env_values = true)]
    customer_secret: String,
    /// Requests per sliding second before 429 (0: unlimited).
    #[arg(long, default_value_t = 10)]
    rate_limit: u32,
    /// Operations with a limit of their own, not counted in --rate-limit:
    /// `NAME=OPERATION[,OPERATION...]:RATE`, e.g.
    /// `channel-queries=list_channels,list_channel_users,list_channel_hosts,get_user_property:20`.
    /// May be given several times.
    #[arg(long)]
    rate_limit_group: Vec<RateLimitGroup>,
    /// Latency added to every answer, e.g. 0ms, 50ms, 1s.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// The account to start with.
    #[arg(long, value_enum, default_value_t = Seed::Demo)]
    seed: Seed,
    /// How to answer: as the live service does (agora), or as the document shows (document).
    #[arg(long, value_enum, default_value_t = Flavor::Agora)]
    flavor: Flavor,
    /// Projects to add after the seed (`filler-00001`, ...), for an account of realistic size.
    #[arg(long, default_value_t = 0)]
    extra_projects: usize,
    /// Send Agora Notifications (NCS) events of the channels to this URL (`{appid}` in it is
    /// replaced with the event's App ID), signed with --notify-secret. Given several times, the
    /// notices go to each in turn (as a load balancer would send them to several replicas).
    #[arg(long, requires = "notify_secret")]
    notify_url: Vec<String>,
    /// Every this often (e.g. 2s), somebody joins or leaves a channel of the demo seed.
    #[arg(long, value_parser = humantime::parse_duration)]
    activity: Option<Duration>,
    /// The NCS secret that signs the notices.
    #[arg(long, env = "AGORA_NCS_SECRET", hide_env_values = true)]
    notify_secret: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    let config = SandboxConfig {
        customer_id: args.customer_id,
        customer_secret: args.customer_secret,
        rate_limit: args.rate_limit,
        rate_limit_groups: args.rate_limit_group,
        latency: args.latency,
        seed: args.seed,
        flavor: args.flavor,
        extra_projects: args.extra_projects,
        activity: args.activity,
        notify: match (args.notify_url.is_empty(), args.notify_secret) {
            (false, Some(secret)) => Some(NotifyConfig { urls: args.notify_url, secret, ..Default::default() }),
            _ => None,
        },
    };
    let listeners = args.listen.iter().map(std::net::TcpListener::bind).collect::<Result<Vec<_>, _>>()?;
    let sandbox = Sandbox::serve_domains(config, listeners)?;
    for (index, base_url) in sandbox.base_urls().iter().enumerate() {
        println!("agora-sandbox listening: domain {index}, base URL {base_url}");
    }
    println!(
        "test hooks: {}/__sandbox/{{stats,faults,reset,channels,notify,traceparents,domains}}",
        sandbox.root_url()
    );
    tokio::signal::ctrl_c().await?;
    sandbox.stop().await;
    Ok(())
}
