#!/usr/bin/env python3
"""Drive one tool call through an MCP Streamable HTTP endpoint (stdlib only).

    drive_client.py URL

initialize → notifications/initialized → tools/list → tools/call (the tool
the conformance scenario expects, from $MCP_CONFORMANCE_SCENARIO, else the
first one listed; arguments made up from its inputSchema's required
properties) → DELETE of the session. Used by client-via-ballast.sh, where
URL is Ballast's /mcp and the tool lives on the suite's mock server.

Prints one JSON line per step on stdout. Exit 0 when the call got a result
(or there was no tool to call), 1 otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

PROTOCOL_VERSION = "2025-11-25"
TIMEOUT_S = 20
# Scenario → the tool its mock server offers (and checks was called).
EXPECTED_TOOL = {"tools_call": "add_numbers", "sse-retry": "test_reconnection"}


class Session:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session_id: str | None = None
        self.version: str | None = None
        self.next_id = 0

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.session_id:
            h["Mcp-Session-Id"] = self.session_id
        if self.version:
            h["MCP-Protocol-Version"] = self.version
        return h

    def notify(self, method: str, params: dict | None = None) -> None:
        msg = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        req = urllib.request.Request(self.url, json.dumps(msg).encode(), self._headers(), method="POST")
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            if resp.status != 202:
                raise RuntimeError(f"{method}: HTTP {resp.status}, expected 202")

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        rid = self.next_id
        msg = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        req = urllib.request.Request(self.url, json.dumps(msg).encode(), self._headers(), method="POST")
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            sid = resp.headers.get("Mcp-Session-Id")
            if sid:
                self.session_id = sid
            ctype = resp.headers.get("Content-Type", "")
            if ctype.startswith("text/event-stream"):
                answer = read_sse_answer(resp, rid)
            else:
                answer = json.load(resp)
        if answer is None:
            raise RuntimeError(f"{method}: the stream ended without an answer")
        return answer

    def delete(self) -> int:
        req = urllib.request.Request(self.url, headers=self._headers(), method="DELETE")
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code


def read_sse_answer(resp, rid: int) -> dict | None:
    """Reads SSE events until the response to `rid`; None if the stream ends first."""
    data: list[str] = []
    for raw in resp:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
        elif line == "":
            payload = "\n".join(data)
            data = []
            if not payload.strip():
                continue  # priming event or keep-alive
            msg = json.loads(payload)
            if msg.get("id") == rid and ("result" in msg or "error" in msg):
                return msg
    return None


def make_args(schema: dict) -> dict:
    """Values for the required properties of a JSON Schema object."""
    props = schema.get("properties") or {}
    args: dict = {}
    for i, name in enumerate(schema.get("required") or []):
        kind = (props.get(name) or {}).get("type")
        if kind in ("number", "integer"):
            args[name] = i + 2
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
        else:
            args[name] = "conformance"
    return args


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    s = Session(sys.argv[1])
    init = s.request(
        "initialize",
        {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "ballast-conformance-driver", "version": "1.0.0"},
        },
    )
    print(json.dumps({"initialize": init}))
    if "result" not in init:
        return 1
    s.version = init["result"].get("protocolVersion", PROTOCOL_VERSION)
    s.notify("notifications/initialized")
    listed = s.request("tools/list", {})
    print(json.dumps({"tools/list": listed}))
    tools = (listed.get("result") or {}).get("tools") or []
    ok = "result" in listed
    if tools:
        want = EXPECTED_TOOL.get(os.environ.get("MCP_CONFORMANCE_SCENARIO", ""))
        tool = next((t for t in tools if t.get("name") == want), tools[0])
        called = s.request(
            "tools/call",
            {"name": tool["name"], "arguments": make_args(tool.get("inputSchema") or {})},
        )
        print(json.dumps({"tools/call": called}))
        ok = ok and "result" in called
    print(json.dumps({"delete": s.delete()}))
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # report, don't trace: the suite saves stderr
        print(f"drive_client: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
