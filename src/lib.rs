//! Ballast: a gateway that puts any MCP server behind a robust Streamable
//! HTTP endpoint.
//!
//! # Layout
//! Data flows downstream → router → upstream and back (see ARCHITECTURE.md):
//!
//! - [`config`] — the TOML schema, validation with file:line:column errors,
//!   and `mcpServers` JSON import.
//! - [`jsonrpc`] — JSON-RPC envelopes; params and results stay raw JSON.
//! - [`mcp`] — protocol knowledge: versions, method names, params edits.
//! - [`downstream`] — the HTTP routes clients use: Streamable HTTP POST/GET/
//!   DELETE, sessions, SSE encoding, Host/Origin checks, health.
//! - [`router`] — the merged catalog, routing by name/URI, id and progress
//!   token mapping, server→client request routing.
//! - [`upstream`] — stdio children and remote Streamable HTTP servers behind
//!   one transport shape, connections, supervision with backoff.
//! - [`gateway`] — the pieces wired together; [`server`] — the accept loop
//!   and the drain; [`shutdown`] — signals.
//! - [`resilience`] — failure classes and the call policies: retry (backoff,
//!   budget), circuit breakers, bulkheads, rate limits, stale cache.
//! - [`store`] — the event log and session records behind traits: memory,
//!   or Redis (shared by replicas) with a memory fallback.
//! - [`observe`] — logging, counters and Prometheus metrics. [`demo`] — the
//!   built-in demo upstream.
//!
//! The second binary, `ballast-bench` (`src/bin/ballast-bench/`), is a load
//! generator for MCP over Streamable HTTP.
//!
//! The entry point for embedding and tests is [`server::run`]: it takes a
//! bound listener, a [`config::Config`] and a [`shutdown::Shutdown`].

pub mod config;
pub mod demo;
pub mod downstream;
pub mod gateway;
pub mod jsonrpc;
pub mod mcp;
pub mod observe;
pub mod resilience;
pub mod router;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod upstream;

pub use self::config::Config;
pub use self::server::{run, run_with_stores};
pub use self::shutdown::Shutdown;
