//! The end-to-end suite: one test binary, a module per area, real sockets on 127.0.0.1.

mod audit;
mod auth;
mod cache;
mod cluster;
mod coherence;
mod common;
mod failover;
mod fields;
mod fleet;
mod gateway;
mod handoff;
mod hardening;
mod hostile;
mod identity;
mod live;
mod notices;
mod reliability;
mod sandbox;
mod throttle;
mod tidy;
mod traces;
