#!/usr/bin/env bash
# The "client" that the conformance suite's client scenarios drive:
#   conformance client --command "bash conformance/client-via-ballast.sh" --scenario S
# The suite appends its mock server's URL as the last argument. This starts
# Ballast with that URL as its one Streamable HTTP upstream, drives one
# tools/call through Ballast (drive_client.py), and stops Ballast by its PID.
# So the suite judges Ballast's upstream side: its initialize, its calls,
# its SSE resumption (Last-Event-ID, retry:) towards a remote server.
#
# Env: BALLAST_BIN (default <repo>/target/debug/ballast), PYTHON3 (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
bin="${BALLAST_BIN:-$repo/target/debug/ballast}"
py="${PYTHON3:-python3}"

(($# >= 1)) || { echo "usage: $0 <upstream-url>" >&2; exit 2; }
url="${!#}"
[[ "$url" =~ ^https?://[^\"\\[:space:]]+$ ]] || { echo "client-via-ballast: bad URL: $url" >&2; exit 2; }
[[ -x "$bin" ]] || { echo "client-via-ballast: no Ballast binary at $bin" >&2; exit 2; }

tmp="$(mktemp -d)"
pid=""
cleanup() {
  local rc=$?
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  echo "--- ballast log ---" >&2
  cat "$tmp/ballast.log" >&2 2>/dev/null || true
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$tmp/ballast.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
drain_timeout = "2s"
startup_wait = "10s"

[log]
format = "json"
level = "info,ballast=debug"

[upstreams.conformance]
url = "$url"
init_timeout = "10s"
EOF

"$bin" serve --config "$tmp/ballast.toml" >"$tmp/ballast.log" 2>&1 &
pid=$!

ready=""
for _ in $(seq 150); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then ready=1; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$ready" ]] || { echo "client-via-ballast: Ballast not ready on :$port within 15 s" >&2; exit 1; }

"$py" "$here/drive_client.py" "http://127.0.0.1:$port/mcp"
