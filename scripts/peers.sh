#!/usr/bin/env bash
# Install real MCP peers (servers and clients Ballast is tested against) into
# ${BALLAST_PEERS_DIR:-<repo>/target/peers}. Idempotent: a stamp file records the
# pinned versions; when it matches and the key files exist, this is a no-op.
# Prints KEY=path lines at the end (EVERYTHING_JS, PYTHON, MCP_SERVER_TIME,
# LOOPBACK_PRELOAD, plus PEERS_DIR and NODE_MODULES).
#
# server-everything facts (read from the installed 2026.8.31 package):
#   - entry point: node_modules/@modelcontextprotocol/server-everything/dist/index.js
#     (package.json "bin": {"mcp-server-everything": "dist/index.js"}, ESM).
#   - mode = first CLI argument: "stdio" (default when absent) | "sse" |
#     "streamableHttp"; anything else prints usage and exits 1.
#   - HTTP modes: port = $PORT env, default 3001 (`process.env.PORT || 3001`,
#     passed as a string to express app.listen(PORT, cb), i.e. no host -> all
#     interfaces; hence loopback.cjs). PORT=0 binds a random port but the log
#     line then says "port 0", so pick a free port yourself.
#     streamableHttp: POST/GET/DELETE /mcp. sse: GET /sse, POST /message?sessionId=...
#   - streamableHttp logs "MCP Streamable HTTP Server listening on port N" on
#     stderr once listening (and chatty console.log lines on stdout).
#   - echo tool returns text "Echo: <message>".
set -euo pipefail

EVERYTHING_VERSION=2026.8.31   # npm @modelcontextprotocol/server-everything
TS_SDK_VERSION=1.32.2          # npm @modelcontextprotocol/sdk (server-everything dep ^1.30.0; pinned for reproducibility)
MCP_PY_VERSION=2.3.0           # PyPI mcp (Python SDK, used by tests/interop/client.py)
MCP_SERVER_TIME_VERSION=2026.10.19  # PyPI mcp-server-time
STAMP_FORMAT=1

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${BALLAST_PEERS_DIR:-$repo/target/peers}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

everything_js="$dir/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
py="$dir/venv/bin/python"
time_bin="$dir/venv/bin/mcp-server-time"
preload="$dir/loopback.cjs"
stamp="$dir/.stamp"

# --- loopback preload (always (re)written when its content differs; cheap) ---
loopback_src="$(cat <<'JS'
'use strict';
// Preload (node --require) that makes net.Server#listen default to a loopback
// host when the caller gives none, so test servers never bind all interfaces.
// Covers http/https/express servers (they inherit net.Server). An explicitly
// given host, a pipe path, a handle or an fd is left untouched.
// Host override: BALLAST_LISTEN_HOST (default 127.0.0.1).
const net = require('net');
const HOST = process.env.BALLAST_LISTEN_HOST || '127.0.0.1';
const orig = net.Server.prototype.listen;
if (!orig.__ballastLoopback) {
  const isPort = (v) =>
    typeof v === 'number' ||
    (typeof v === 'string' && v.trim() !== '' && Number.isInteger(Number(v)));
  const patched = function listen(...args) {
    const a0 = args[0];
    if (args.length === 0 || typeof a0 === 'function') {
      args.unshift(0, HOST);                       // listen() / listen(cb)
    } else if (isPort(a0) || a0 === undefined || a0 === null) {
      if (typeof args[1] !== 'string') {           // listen(port[, backlog][, cb])
        args.splice(1, 0, HOST);
      }
      if (a0 === undefined || a0 === null) args[0] = 0;
    } else if (a0 && typeof a0 === 'object' && !(a0 instanceof net.Server) &&
               a0._handle === undefined && a0.handle === undefined &&
               a0.fd === undefined && a0.path == null && a0.host == null) {
      args[0] = Object.assign({}, a0, { host: HOST }); // listen({port, ...})
    }
    return orig.apply(this, args);
  };
  patched.__ballastLoopback = true;
  net.Server.prototype.listen = patched;
}
JS
)"
if [[ ! -f "$preload" ]] || [[ "$(cat "$preload")" != "$loopback_src" ]]; then
  printf '%s\n' "$loopback_src" > "$preload.tmp"
  mv "$preload.tmp" "$preload"
fi

want_stamp="format=$STAMP_FORMAT
@modelcontextprotocol/server-everything=$EVERYTHING_VERSION
@modelcontextprotocol/sdk=$TS_SDK_VERSION
mcp=$MCP_PY_VERSION
mcp-server-time=$MCP_SERVER_TIME_VERSION"

if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want_stamp" ]] &&
   [[ -f "$everything_js" && -x "$py" && -x "$time_bin" ]]; then
  echo "peers: up to date in $dir" >&2
else
  rm -f "$stamp"
  echo "peers: installing into $dir" >&2

  # --- Node peers ---
  command -v npm >/dev/null || { echo "peers: npm not found" >&2; exit 1; }
  mkdir -p "$dir/node"
  npm install --prefix "$dir/node" --no-audit --no-fund --no-update-notifier \
    --cache "$dir/npm-cache" --loglevel=error \
    "@modelcontextprotocol/server-everything@$EVERYTHING_VERSION" \
    "@modelcontextprotocol/sdk@$TS_SDK_VERSION" >&2

  # --- Python peers ---
  if [[ ! -x "$py" ]]; then
    python3 -m venv "$dir/venv" >&2
  fi
  "$py" -m pip install --quiet --disable-pip-version-check --cache-dir "$dir/pip-cache" \
    "mcp==$MCP_PY_VERSION" "mcp-server-time==$MCP_SERVER_TIME_VERSION" >&2

  for f in "$everything_js" "$py" "$time_bin"; do
    [[ -e "$f" ]] || { echo "peers: expected $f after install" >&2; exit 1; }
  done
  printf '%s\n' "$want_stamp" > "$stamp.tmp"
  mv "$stamp.tmp" "$stamp"
  echo "peers: installed" >&2
fi

echo "PEERS_DIR=$dir"
echo "NODE_MODULES=$dir/node/node_modules"
echo "EVERYTHING_JS=$everything_js"
echo "PYTHON=$py"
echo "MCP_SERVER_TIME=$time_bin"
echo "LOOPBACK_PRELOAD=$preload"
