//! `ballast-bench`: a load generator for MCP over Streamable HTTP, the MCP
//! equivalent of redis-benchmark. It opens sessions, then concurrent
//! workers call one tool back to back for a duration or a number of calls,
//! and it reports throughput, latency percentiles and errors by kind.
//!
//! It is bounded (at most 1h, at most 100M calls, every call under a
//! timeout) and talks only to the URL it is given. It is lean, because on a
//! small machine it shares the CPU with the server under test: one
//! single-threaded runtime by default, one keep-alive HTTP/1.1 client, a
//! prebuilt request body per call, and answers decoded only as far as needed.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | `main.rs` | runtime, modes, exit codes; `anyhow` only here and in `idle.rs` |
//! | `cli.rs` | flags, limits, the duration syntax |
//! | `client.rs` | the HTTP client, sessions, one `tools/call` exchange |
//! | `reply.rs` | reading a JSON-RPC message: our response? success? |
//! | `sse.rs` | incremental `text/event-stream` reader |
//! | `error.rs` | call errors and the kinds the report counts |
//! | `sessions.rs` | opening and closing many sessions at once |
//! | `load.rs` | workers, warm-up, the measured phase and how it ends |
//! | `stats.rs` | calls, errors, latency histogram (µs) |
//! | `report.rs` | the table and the JSON line |
//! | `idle.rs` | `--idle-sessions`: open, hold, close |
//! | `signal.rs` | SIGINT/SIGTERM |

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::Args;
use crate::client::McpClient;
use crate::load::Plan;
use crate::report::Report;
use crate::signal::Signals;

mod cli;
mod client;
mod error;
mod idle;
mod load;
mod reply;
mod report;
mod sessions;
mod signal;
mod sse;
mod stats;

/// Exit code of a second SIGINT/SIGTERM, which ends the run at once. (The
/// first ends it like the deadline: calls in flight finish, results print.)
const EXIT_INTERRUPTED: i32 = 130;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
    };
    let result = runtime
        .context("cannot start the tokio runtime")
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ballast-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the mode the flags ask for and prints its results.
async fn run(args: Args) -> anyhow::Result<()> {
    let pool = usize::try_from(args.concurrency)
        .unwrap_or(usize::MAX)
        .max(sessions::PARALLEL);
    let client = Arc::new(McpClient::new(
        args.url.clone(),
        &args.tool,
        &args.arguments,
        args.progress,
        pool,
    ));
    if let Some(n) = args.idle_sessions {
        return idle::hold(&client, n, args.hold, args.timeout).await;
    }

    let opened = sessions::open(&client, args.sessions, args.timeout).await;
    if let Some(e) = opened.first_error {
        sessions::close(&client, &opened.sessions).await;
        return Err(anyhow::Error::new(e).context(format!(
            "could not open {} of {} sessions at {}",
            opened.failed, args.sessions, args.url
        )));
    }
    let stateless = opened.sessions.iter().all(|s| s.id.is_none());
    let sessions: Arc<[_]> = opened.sessions.into();

    let finish = CancellationToken::new();
    let mut signals = Signals::install();
    let on_signal = finish.clone();
    let watcher = tokio::spawn(async move {
        signals.recv().await;
        on_signal.cancel();
        signals.recv().await;
        std::process::exit(EXIT_INTERRUPTED);
    });
    let plan = Plan {
        concurrency: args.concurrency,
        duration: args.run_duration(),
        calls: args.calls,
        warmup: args.warmup,
        timeout: args.timeout,
    };
    let (stats, elapsed) = load::run(client.clone(), sessions.clone(), plan, finish).await;
    sessions::close(&client, &sessions).await;
    watcher.abort();

    let report = Report {
        stats,
        elapsed,
        concurrency: args.concurrency,
        sessions: args.sessions,
        stateless,
        tool: args.tool,
        url: args.url.to_string(),
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
