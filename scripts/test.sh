#!/usr/bin/env bash
# The README's test command: everything CI runs.
#   1. formatting and lints (rustfmt, clippy -D warnings), and the Windows
#      build checked (and linted) by cross-compiling for x86_64-pc-windows-gnu
#      (.ci/run installs the target and MinGW);
#   2. installs the real MCP peers (scripts/peers.sh → target/peers);
#   3. runs every test, including the interop tests that need those peers
#      (marked #[ignore] so a bare `cargo test` never counts them as passed);
#   4. the official MCP conformance suite against Ballast (scripts/conformance.sh;
#      baseline in conformance/baseline.txt, last results in docs/conformance.md).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo check --target x86_64-pc-windows-gnu --all-targets --locked
cargo clippy --target x86_64-pc-windows-gnu --all-targets --locked -- -D warnings

eval "$(bash scripts/peers.sh)"
export BALLAST_PEERS_DIR="$PEERS_DIR" EVERYTHING_JS PYTHON MCP_SERVER_TIME LOOPBACK_PRELOAD

cargo test --all-targets --locked -- --include-ignored

bash scripts/conformance.sh
