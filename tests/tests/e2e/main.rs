//! End-to-end tests: real control planes and gateways (each on its own runtime), real Postgres
//! (one database per test), real TLS between them and real HTTP everywhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step should stop a test loudly

mod access_log;
mod auth_chain;
mod auth_chain_any;
mod auth_token;
mod backup;
mod certs_api;
mod client_http1;
mod config;
mod console;
mod edge_sessions;
mod external_oauth;
mod fleet;
mod grpc_upstream;
mod hardening_cp;
mod hardening_edge;
mod hardening_proxy;
mod hardening_review;
mod hardening_secrets;
mod hardening_sync;
mod hmac;
mod jwt;
mod kubernetes;
mod lifecycle;
mod limiters;
mod limits;
mod load_balancing;
mod management;
mod mtls;
mod oas;
mod oauth;
mod oauth_peers;
mod observability;
mod oidc;
mod otlp_traces;
mod outages;
mod plugins_grpc;
mod plugins_js;
mod proxy;
mod redis_topologies;
mod resilience;
mod secrets_at_rest;
mod split_token;
mod statuses;
mod streaming;
mod tls_edge;
mod upstream_auth;
mod upstream_framing;
mod upstream_tls;
mod websockets;
