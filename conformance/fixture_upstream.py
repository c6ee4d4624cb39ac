#!/usr/bin/env python3
"""A tiny stdio MCP server (Python stdlib only) for the conformance run.

The suite's `server-sse-polling` scenario calls a tool named
`test_reconnection` and expects the server to close the POST's SSE stream
before the result, then to deliver the result on a GET with `Last-Event-ID`
(SEP-1699). server-everything has no such tool, and closing and resuming
streams is the gateway's job anyway: scripts/conformance.sh runs Ballast with
a short `max_stream_duration` in front of this server, whose only tool
answers after TEST_RECONNECTION_DELAY_S seconds (default 3, i.e. after
Ballast has closed the POST stream and while the resumed GET is open).

Newline-delimited JSON-RPC on stdin/stdout (SPEC.md 22); logs on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

SUPPORTED = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]
DELAY_S = float(os.environ.get("TEST_RECONNECTION_DELAY_S", "3"))

TOOLS = [
    {
        "name": "test_reconnection",
        "description": "Answers after a delay, so the gateway closes the SSE stream mid-call",
        "inputSchema": {"type": "object", "properties": {}, "required": []},
    }
]

_out = threading.Lock()


def send(msg: dict) -> None:
    line = json.dumps(msg, separators=(",", ":"))
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def result(rid, res: dict) -> None:
    send({"jsonrpc": "2.0", "id": rid, "result": res})


def error(rid, code: int, message: str) -> None:
    send({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})


def call_tool(rid, params: dict) -> None:
    name = params.get("name")
    if name != "test_reconnection":
        error(rid, -32602, f"Unknown tool: {name}")
        return
    time.sleep(DELAY_S)
    result(rid, {"content": [{"type": "text", "text": "Reconnection test completed successfully"}]})


def handle(msg: dict) -> None:
    method = msg.get("method")
    rid = msg.get("id")
    if method is None or rid is None:
        return  # a response or a notification: nothing to answer
    params = msg.get("params") or {}
    if method == "initialize":
        asked = params.get("protocolVersion")
        result(
            rid,
            {
                "protocolVersion": asked if asked in SUPPORTED else SUPPORTED[0],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "ballast-conformance-fixture", "version": "1.0.0"},
            },
        )
    elif method == "ping":
        result(rid, {})
    elif method == "tools/list":
        result(rid, {"tools": TOOLS})
    elif method == "tools/call":
        threading.Thread(target=call_tool, args=(rid, params), daemon=True).start()
    else:
        error(rid, -32601, f"Method not found: {method}")


def main() -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as e:
            print(f"fixture: bad JSON: {e}", file=sys.stderr)
            continue
        if isinstance(msg, dict):
            handle(msg)


if __name__ == "__main__":
    main()
