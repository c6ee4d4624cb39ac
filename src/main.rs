//! The `ballast` command line: `serve`, `demo`, `check-config`, and the
//! hidden `demo-upstream` the demo runs as its child. Parses arguments,
//! loads config, starts logging, picks exit codes; the library does the rest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ballast::config::{self, Config, ConfigError, LogFormat, UpstreamConfig};
use clap::{Parser, Subcommand};

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "ballast",
    version,
    about = "A resilient gateway for MCP servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a config file (or an mcpServers JSON).
    Serve {
        /// Ballast TOML config.
        #[arg(
            long,
            conflicts_with = "mcp_config",
            required_unless_present = "mcp_config"
        )]
        config: Option<PathBuf>,
        /// An existing `{"mcpServers": …}` JSON (Claude Desktop / Cursor / Claude Code).
        #[arg(long)]
        mcp_config: Option<PathBuf>,
        /// Override `server.listen`: IP:PORT or HOST:PORT (a host name is
        /// resolved once at start; its first IPv4 address is used).
        #[arg(long, value_parser = parse_listen)]
        listen: Option<SocketAddr>,
        /// Override `log.format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Run the gateway in front of the built-in demo upstream (no config needed).
    Demo {
        /// Address to listen on: IP:PORT or HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_listen)]
        listen: SocketAddr,
        /// Log format.
        #[arg(long, value_enum, default_value = "pretty")]
        log_format: LogFormat,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig {
        /// A Ballast TOML file, or an mcpServers JSON file (by `.json` extension).
        file: PathBuf,
    },
    /// The demo upstream itself: an MCP server on stdio.
    #[command(hide = true)]
    DemoUpstream,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        // One thread: a stdio server's work is one pipe in, one pipe out;
        // a second worker thread only adds cross-thread wake-ups.
        Command::DemoUpstream => {
            run_async_on(tokio::runtime::Builder::new_current_thread(), async {
                ballast::demo::run_demo_upstream()
                    .await
                    .context("demo upstream")
            })
        }
        Command::Demo { listen, log_format } => {
            let mut config = Config::default();
            config.server.listen = listen;
            config.log.format = log_format;
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "ballast".into());
            config.add_upstream(
                "demo",
                UpstreamConfig::stdio(exe, vec!["demo-upstream".into()]),
            );
            let banner = format!(
                "Ballast demo: MCP endpoint http://{listen}/mcp (demo upstream tools: echo, sleep, fail, flaky, crash, progress, log, sample, elicit)\n\
                 Try it with the Python SDK:\n  \
                 python -c \"import anyio; from mcp import ClientSession; from mcp.client.streamable_http import streamable_http_client as c\n\
                 async def m():\n    async with c('http://{listen}/mcp') as (r, w):\n        async with ClientSession(r, w) as s:\n            await s.initialize(); print(await s.call_tool('echo', {{'message': 'hi'}}))\n\
                 anyio.run(m)\"\n\
                 Health: http://{listen}/healthz  Readiness: http://{listen}/readyz  Stop: Ctrl-C"
            );
            serve(config, Some(banner))
        }
        Command::Serve {
            config: config_path,
            mcp_config,
            listen,
            log_format,
        } => {
            let loaded = match (&config_path, mcp_config) {
                (Some(path), _) => config::load_toml_file(path),
                (None, Some(path)) => config::load_mcp_servers_file(&path),
                (None, None) => unreachable!("clap requires one"),
            };
            let mut config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    let code = config_error(&e);
                    if let Some(path) = config_path.filter(|p| looks_like_json(p)) {
                        eprintln!(
                            "hint: {} looks like JSON; for an mcpServers file use `ballast serve --mcp-config {}`",
                            path.display(),
                            path.display()
                        );
                    }
                    return code;
                }
            };
            if let Some(l) = listen {
                config.server.listen = l;
            }
            if let Some(f) = log_format {
                config.log.format = f;
            }
            serve(config, None)
        }
    }
}

/// `--listen`: an address, or a host name resolved now.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    config::resolve_listen(value).map_err(|e| e.to_string())
}

/// Whether a file given to `--config` is JSON (by extension, or an opening
/// `{`), to point its owner to `--mcp-config`.
fn looks_like_json(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || std::fs::read(path)
            .is_ok_and(|b| b.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{'))
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn check_config(file: &std::path::Path) -> ExitCode {
    let loaded = if file.extension().is_some_and(|e| e == "json") {
        config::load_mcp_servers_file(file)
    } else {
        config::load_toml_file(file)
    };
    match loaded {
        Ok(c) => match toml::to_string_pretty(&c) {
            Ok(s) => {
                use std::io::Write;
                // A closed stdout (`| head`) is the reader's choice, not an error.
                match writeln!(std::io::stdout().lock(), "{s}") {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                        eprintln!("error: cannot print config: {e}");
                        ExitCode::FAILURE
                    }
                    _ => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("error: cannot print config: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => config_error(&e),
    }
}

/// Binds, prints `banner` (only once the socket accepts), and serves.
fn serve(config: Config, banner: Option<String>) -> ExitCode {
    if let Err(e) = ballast::observe::init_logging(config.log.format, &config.log.level) {
        eprintln!("error: logging: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    run_async(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        if let Some(banner) = banner {
            eprintln!("{banner}");
        }
        let shutdown = ballast::Shutdown::from_signals();
        ballast::run(listener, config, shutdown).await?;
        Ok(())
    })
}

fn run_async(f: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    run_async_on(tokio::runtime::Builder::new_multi_thread(), f)
}

/// Runs `f` to completion on a runtime from `builder`.
fn run_async_on(
    mut builder: tokio::runtime::Builder,
    f: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
