#!/usr/bin/env python3
"""Interop client for Ballast integration tests, built on the official MCP Python SDK (mcp 2.x).

Run it with the venv python from scripts/peers.sh (PYTHON=...):

    client.py --url URL [--transport streamable-http|sse] [--call NAME JSON_ARGS]...
              [--read-first-resource | --read-resource URI] [--timeout-s N]

Connects, initializes, lists tools (all pages), performs each --call in order,
optionally reads a resource, and prints ONE JSON object on stdout:

    {"protocol_version": str, "server_name": str, "tools": [name, ...],
     "calls": [{"name": str, "is_error": bool, "text": str}, ...],
     "resource": {"uri": str, "text_len": int} | null}

"text" is the concatenation of the call's text content items. "text_len" is the
total length of the resource's text contents (base64 length for blob contents).
A tool result with isError=true is reported (is_error: true), not an exception.
Exit 0 on success; 1 with a message on stderr on any exception or timeout. The
whole run is bounded by --timeout-s (default 30) via anyio.fail_after, with a
hard os._exit backstop a few seconds later in case teardown hangs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any

import anyio
from mcp import ClientSession, types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 1 too (argparse's default is 2)
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = _Parser(description="MCP interop client (Python SDK)")
    p.add_argument("--url", required=True, help="server URL (e.g. http://127.0.0.1:PORT/mcp or .../sse)")
    p.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    p.add_argument(
        "--call",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "JSON_ARGS"),
        help="call tool NAME with JSON object arguments; repeatable, run in order",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--read-first-resource", action="store_true", help="read the first resource of resources/list")
    g.add_argument("--read-resource", metavar="URI", help="read this resource URI")
    p.add_argument("--timeout-s", type=float, default=30.0, help="overall deadline in seconds (default 30)")
    args = p.parse_args(argv)
    calls = []
    for name, raw in args.call:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as e:
            p.error(f"--call {name}: JSON_ARGS is not valid JSON: {e}")
        if not isinstance(parsed, dict):
            p.error(f"--call {name}: JSON_ARGS must be a JSON object")
        calls.append((name, parsed))
    args.calls = calls
    return args


async def run_session(session: ClientSession, args: argparse.Namespace) -> dict[str, Any]:
    init = await session.initialize()

    tools: list[str] = []
    cursor: str | None = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
        page = await session.list_tools(params=params)
        tools.extend(t.name for t in page.tools)
        cursor = page.next_cursor
        if not cursor:
            break

    calls = []
    for name, arguments in args.calls:
        res = await session.call_tool(name, arguments)
        text = "".join(c.text for c in res.content if isinstance(c, types.TextContent))
        calls.append({"name": name, "is_error": bool(res.is_error), "text": text})

    resource = None
    uri: str | None = args.read_resource
    if args.read_first_resource:
        cursor = None
        while uri is None:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
            page = await session.list_resources(params=params)
            if page.resources:
                uri = str(page.resources[0].uri)
            cursor = page.next_cursor
            if not cursor:
                break
        if uri is None:
            raise RuntimeError("--read-first-resource: server listed no resources")
    if uri is not None:
        rr = await session.read_resource(uri)
        n = 0
        for c in rr.contents:
            if isinstance(c, types.TextResourceContents):
                n += len(c.text)
            elif isinstance(c, types.BlobResourceContents):
                n += len(c.blob)
        resource = {"uri": uri, "text_len": n}

    return {
        "protocol_version": init.protocol_version,
        "server_name": init.server_info.name,
        "tools": tools,
        "calls": calls,
        "resource": resource,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with anyio.fail_after(args.timeout_s):
        if args.transport == "sse":
            transport = sse_client(args.url)
        else:
            transport = streamable_http_client(args.url)
        async with transport as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                return await run_session(session, args)


def describe(exc: BaseException) -> str:
    # Unwrap (possibly nested) exception groups from anyio task groups.
    parts = []
    stack = [exc]
    while stack:
        e = stack.pop(0)
        sub = getattr(e, "exceptions", None)
        if sub:
            stack.extend(sub)
        else:
            parts.append(f"{type(e).__name__}: {e}")
    return "; ".join(parts) or repr(exc)


def main() -> int:
    args = parse_args(sys.argv[1:])

    def hard_exit() -> None:
        sys.stderr.write(f"client.py: hard timeout after {args.timeout_s}s (teardown hung)\n")
        sys.stderr.flush()
        os._exit(1)

    backstop = threading.Timer(args.timeout_s + 5.0, hard_exit)
    backstop.daemon = True
    backstop.start()
    try:
        out = anyio.run(main_async, args)
    except TimeoutError:
        sys.stderr.write(f"client.py: timed out after {args.timeout_s}s\n")
        return 1
    except BaseException as e:  # noqa: BLE001 - report everything, exit 1
        if isinstance(e, KeyboardInterrupt):
            raise
        sys.stderr.write(f"client.py: {describe(e)}\n")
        return 1
    finally:
        backstop.cancel()
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
