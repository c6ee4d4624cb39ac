#!/usr/bin/env bash
# bench/compare.sh — Ballast side by side with other MCP gateways, on one
# machine, in one run (issue 6). Results: docs/benchmarks.md.
#
# Every gateway stands in front of the same fast stdio upstream,
# `target/release/ballast demo-upstream` (tool `echo {"message":"hi"}`); the
# "limit" reference (examples/limit_server.rs) is a bare hyper server with
# canned answers: the HTTP ceiling of this machine with this load generator.
# ballast-bench drives them all:
#   1. memory, one system at a time: RSS after start (idle), a 10-call smoke
#      test (a system that fails it is skipped, with the reason in the
#      report), RSS while ballast-bench holds N idle sessions; then stopped;
#   2. load: all systems restarted side by side; for each round, for each
#      concurrency, each system in turn (A B A B …) runs one bounded
#      `tools/call` run over SESSIONS sessions; gateway CPU time
#      (/proc/PID/stat) is read around every run; the report takes medians.
# Peers install from the registries into target/bench-peers (reused while
# the pinned versions match); a peer that fails to install or start is
# skipped with a message, and the report says so.
#
# Usage: bash bench/compare.sh [--write-docs]
#   --write-docs   also replace the generated section of docs/benchmarks.md
#                  (between <!-- compare:begin --> and <!-- compare:end -->)
#   --report-only  measure nothing: render the last run in target/bench/run again
# Environment (defaults in brackets):
#   BENCH_QUICK=1              smoke test: 1s runs, 1 round, 50 idle sessions
#   BENCH_DURATION [5s]        length of one load run (ms, s or m)
#   BENCH_ROUNDS [3]           rounds of the interleaved load runs
#   BENCH_CONCURRENCY ["1 16 64"]
#   BENCH_SESSIONS [4]         sessions per load run
#   BENCH_IDLE_SESSIONS [1000] idle sessions for the memory figures
#   BENCH_SYSTEMS              a subset, in order (default: all, see ALL_SYSTEMS)
#   BENCH_NO_BUILD=1           use target/release as it is (no cargo build)
#   BENCH_PEERS_DIR [target/bench-peers]
#   BENCH_CARGO_JOBS [2]       jobs for the one-time `cargo install mcp-proxy`
# Output: target/bench/compare.md; raw JSON lines and logs in target/bench/run/.
#
# Safety: every server listens on 127.0.0.1 only (checked with ss; a system
# found listening elsewhere is stopped and skipped), every load run is
# bounded in time and count and runs under timeout(1), and every process
# this script starts is stopped by its PID (with its descendants) on exit.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

write_docs=0
report_only=0
for arg in "$@"; do
  case "$arg" in
    --write-docs) write_docs=1 ;;
    --report-only) report_only=1 ;;
    -h | --help)
      sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "compare.sh: unknown argument '$arg' (see --help)" >&2
      exit 2
      ;;
  esac
done

say() { printf 'compare.sh: %s\n' "$*" >&2; }

# --- knobs ---
if [[ "${BENCH_QUICK:-0}" == 1 ]]; then
  : "${BENCH_DURATION:=1s}" "${BENCH_ROUNDS:=1}" "${BENCH_IDLE_SESSIONS:=50}"
fi
DURATION="${BENCH_DURATION:-5s}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONCURRENCY="${BENCH_CONCURRENCY:-1 16 64}"
SESSIONS="${BENCH_SESSIONS:-4}"
IDLE_SESSIONS="${BENCH_IDLE_SESSIONS:-1000}"
IDLE_HOLD=5s          # how long ballast-bench holds the idle sessions once opened
MAX_CALLS=50000000    # count bound of one load run (the duration ends it first)
CALL_TIMEOUT=10s      # ballast-bench --timeout: per call and per session open
ALL_SYSTEMS="limit ballast ballast-off ballast-redis ballast-redis-cluster supergateway mcp-proxy-py mcp-proxy-npm mcp-proxy-rs"
SYSTEMS="${BENCH_SYSTEMS:-$ALL_SYSTEMS}"

# Pinned peer versions (PEERS.md: "Other gateways").
SUPERGATEWAY_VERSION=4.0.0    # npm supergateway
MCP_PROXY_NPM_VERSION=6.7.19  # npm mcp-proxy (TypeScript)
MCP_PROXY_PY_VERSION=0.13.0   # PyPI mcp-proxy (Python)
MCP_PROXY_RS_VERSION=0.6.0    # crates.io mcp-proxy (Rust, tower-mcp)

peers="${BENCH_PEERS_DIR:-$repo/target/bench-peers}"
mkdir -p "$peers"
peers="$(cd "$peers" && pwd)"
out="$repo/target/bench"
run="$out/run"

# === report (functions; run at the end, or alone with --report-only) ===

# Renders $run/*.jsonl and meta.json into $out/compare.md.
render_report() {
  python3 - "$run" "$out/compare.md" <<'PY'
"""Turns target/bench/run/*.jsonl into the markdown section (compare.md)."""
import json
import statistics
import sys

run, out_md = sys.argv[1], sys.argv[2]


def lines(name):
    with open(f"{run}/{name}") as f:
        return [json.loads(l) for l in f if l.strip()]


meta = json.load(open(f"{run}/meta.json"))
systems = lines("systems.jsonl")
runs = lines("runs.jsonl")
memory = {m["system"]: m for m in lines("memory.jsonl")}
label = {s["system"]: s["label"] for s in systems}
conc = meta["concurrency"]
lo, hi = min(conc), max(conc)
measured = [s["system"] for s in systems if any(r["system"] == s["system"] and "failed" not in r for r in runs)]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ok(system, c):
    return [r for r in runs if r["system"] == system and r["conc"] == c and "failed" not in r]


def thr(system, c):
    """Median successful calls/s."""
    return med([(r["calls"] - r["error_total"]) / r["duration_s"] for r in ok(system, c) if r["duration_s"] > 0])


def lat(system, c, p):
    return med([r["latency_us"][p] for r in ok(system, c)])


def cpu_us(system, c, key):
    """Median CPU µs per answered call over the runs at c."""
    vals = [r[key] * 1e6 / meta["clk_tck"] / r["calls"] for r in ok(system, c) if r["calls"] > 0]
    return med(vals)


def fmt(x, digits=0, unit=""):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}{unit}"


def ratio(a, b):
    return None if a is None or not b else a / b


def mb(kb):
    return None if not kb else kb / 1024


md = []
w = md.append
w(f"_Generated by `bench/compare.sh` on {meta['date']}"
  + (" — **BENCH_QUICK smoke run, not a measurement**" if meta["quick"] else "") + "._")
w("")
w(f"**Machine:** {meta['cores']} cores ({meta['cpu']}), {meta['memory']}, {meta['kernel']}; "
  f"{meta['rustc']}. Load average (1/5/15 min) at the start {meta['load_start']}, "
  f"before the load runs {meta['load_before']}, after them {meta['load_after']} "
  f"(the machine is shared: other work running at the same time shows here). "
  f"Measuring took {meta['wall_s']} s.")
w("")
w(f"**Method:** every gateway fronts the same stdio upstream, `{meta['upstream']}`, "
  f"tool `echo {{\"message\":\"hi\"}}`; \"limit\" is `examples/limit_server.rs`, a bare hyper "
  f"server with canned answers and no upstream (the HTTP ceiling with this load generator). "
  f"Load: `{meta['bench']}` (single-threaded client) `-c C -s {meta['sessions']} -d {meta['duration']} --json`, "
  f"C in {{{', '.join(map(str, conc))}}}, {meta['rounds']} rounds interleaved (round → C → each system in turn), "
  f"medians of the rounds. Memory: VmRSS of the gateway process after start, then while "
  f"`ballast-bench --idle-sessions {meta['idle_sessions']}` holds that many sessions open (each system alone). "
  f"CPU: utime+stime from /proc/PID/stat around each c={hi} run, per answered call.")
w("")

w("| system | version | command (paths relative to the repo) |")
w("|---|---|---|")
for s in systems:
    cmd = f"`{s['command']}`" if s["command"] else "—"
    w(f"| {s['label']} | {s['version'] or '—'} | {cmd} |")
w("")
skipped = [s for s in systems if s["skipped"]]
if skipped:
    w("**Skipped:**")
    for s in skipped:
        w(f"- {s['label']}: {s['skipped']}")
    w("")

rust = "mcp-proxy-rs" if "mcp-proxy-rs" in measured else None
w(f"### Throughput (successful calls/s, median of {meta['rounds']})")
w("")
cs = "/".join(map(str, conc))
w("| system | " + " | ".join(f"c={c}" for c in conc) + f" | ÷ limit (c={cs})"
  + (f" | ÷ mcp-proxy (Rust) (c={cs})" if rust else "") + " | errors |")
w("|---|" + "---:|" * (len(conc) + (2 if rust else 1)) + "---:|")
for s in measured:
    cells = [fmt(thr(s, c)) for c in conc]
    cells.append(" / ".join(fmt(ratio(thr(s, c), thr("limit", c)), 2, "×") for c in conc))
    if rust:
        cells.append(" / ".join(fmt(ratio(thr(s, c), thr(rust, c)), 2, "×") for c in conc))
    errors = sum(r["error_total"] for r in runs if r["system"] == s and "failed" not in r)
    failed = sum(1 for r in runs if r["system"] == s and "failed" in r)
    err = f"{errors:,}" + (f" ({failed} runs failed)" if failed else "")
    w(f"| {label[s]} | " + " | ".join(cells) + f" | {err} |")
w("")

w(f"### Latency (µs, medians of the runs' percentiles)")
w("")
w(f"| system | p50 c={lo} | p99 c={lo} | p50 c={hi} | p99 c={hi} | p50 c={lo} − limit |")
w("|---|---:|---:|---:|---:|---:|")
limit_p50 = lat("limit", lo, "p50") if "limit" in measured else None
for s in measured:
    p50 = lat(s, lo, "p50")
    d = None if p50 is None or limit_p50 is None else p50 - limit_p50
    w(f"| {label[s]} | {fmt(p50)} | {fmt(lat(s, lo, 'p99'))} | {fmt(lat(s, hi, 'p50'))} | "
      f"{fmt(lat(s, hi, 'p99'))} | {fmt(d, 0, ' µs') if s != 'limit' else '—'} |")
w("")

n_idle = meta["idle_sessions"]
w("### Memory (VmRSS)")
w("")
w("The first three columns are the gateway process alone (VmRSS): every gateway here spawns "
  "the upstream as its child. The next two are PSS (shared pages split between the processes "
  "sharing them) summed over the gateway and all its descendants — plus the redis-server(s) for "
  "the Redis stores; the last counts those descendants (supergateway starts one upstream per "
  "session, through `sh -c`: two processes each).")
w("")
w(f"| system | idle | with {n_idle:,} idle sessions | KB per session | gateway + children, idle (PSS) | "
  f"gateway + children, {n_idle:,} sessions (PSS) | descendants, {n_idle:,} sessions |")
w("|---|---:|---:|---:|---:|---:|---:|")
kb_per = {}
for s in [s["system"] for s in systems]:
    m = memory.get(s)
    if not m:
        continue
    opened = m["sessions_opened"]
    per = (m["rss_sessions_kb"] - m["rss_idle_kb"]) / opened if opened else None
    kb_per[s] = per
    note = "" if opened == m["sessions_asked"] else f" (only {opened:,} opened{': ' + m['note'].strip() if m['note'].strip() else ''})"
    w(f"| {label[s]} | {fmt(mb(m['rss_idle_kb']), 1, ' MB')} | {fmt(mb(m['rss_sessions_kb']), 1, ' MB')}{note} | "
      f"{fmt(per, 2)} | {fmt(mb(m['tree_idle_kb']), 1, ' MB')} | {fmt(mb(m['tree_sessions_kb']), 1, ' MB')} | "
      f"{m['children_sessions']:,} |")
w("")

w(f"### CPU per call (c={hi}, median of {meta['rounds']})")
w("")
w("| system | gateway µs/call | gateway ms per 10k calls | gateway + children µs/call |")
w("|---|---:|---:|---:|")
for s in measured:
    g = cpu_us(s, hi, "cpu_gw_ticks")
    t = cpu_us(s, hi, "cpu_tree_ticks")
    tree = "n/a ¹" if s == "supergateway" else fmt(t, 1)
    w(f"| {label[s]} | {fmt(g, 1)} | {fmt(None if g is None else g * 10, 0)} | {tree} |")
w("")
w(f"Clock ticks are {1000 // meta['clk_tck']} ms; a run of a few seconds has thousands of them. "
  "The redis-servers' CPU is in the Redis stores' gateway + children figures. "
  "¹ supergateway starts each session's upstream through `sh -c` and kills the shell when the "
  "session ends: the upstream is reparented to init, so its CPU time never reaches supergateway's "
  "children counters and cannot be measured this way.")
w("")

if "ballast" in measured:
    w("### Ballast against its goals (this machine)")
    w("")
    w("| goal | target | measured | met |")
    w("|---|---|---:|---|")

    def goal(name, target, value, good, text):
        verdict = "—" if value is None else ("yes" if good(value) else "**no**")
        w(f"| {name} | {target} | {text if value is not None else 'n/a'} | {verdict} |")

    r = ratio(thr("ballast", hi), thr(rust, hi)) if rust else None
    goal(f"calls/s at c={hi} vs mcp-proxy (Rust)", "≥ 2×", r, lambda v: v >= 2, fmt(r, 2, "×"))
    r = ratio(thr("ballast", hi), thr("limit", hi))
    goal(f"calls/s at c={hi} vs the limit", "≥ 0.45×", r, lambda v: v >= 0.45, fmt(r, 2, "×"))
    p = lat("ballast", lo, "p50")
    d = None if p is None or limit_p50 is None else p - limit_p50
    goal(f"p50 at c={lo} over the limit's", "≤ 60 µs", d, lambda v: v <= 60, fmt(d, 0, " µs"))
    g = cpu_us("ballast", hi, "cpu_gw_ticks")
    goal("gateway CPU per call", "≤ 25 µs", g, lambda v: v <= 25, fmt(g, 1, " µs"))
    k = kb_per.get("ballast")
    goal("RSS per idle session", "≤ 2 KB", k, lambda v: v <= 2, fmt(k, 2, " KB"))
    i = mb(memory["ballast"]["rss_idle_kb"]) if "ballast" in memory else None
    goal("idle RSS", "≤ 15 MB", i, lambda v: v <= 15, fmt(i, 1, " MB"))
    if "ballast-redis" in measured:
        rr = ratio(thr("ballast-redis", hi), thr("ballast", hi))
        cost = None if rr is None else (1 - rr) * 100
        goal(f"Redis store's throughput cost at c={hi} (issue 5)", "≤ 20 %", cost, lambda v: v <= 20, fmt(cost, 0, " %"))
    if "ballast-redis-cluster" in measured:
        rr = ratio(thr("ballast-redis-cluster", hi), thr("ballast", hi))
        cost = None if rr is None else (1 - rr) * 100
        w(f"| Redis Cluster store's throughput cost at c={hi} (3 nodes, one machine) | none set | "
          f"{fmt(cost, 0, ' %') if cost is not None else 'n/a'} | — |")
    w("")

w("<details><summary>Every run</summary>")
w("")
w("| round | c | system | calls | errors | calls/s | p50 µs | p99 µs | max µs | gateway CPU µs/call |")
w("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for r in runs:
    if "failed" in r:
        w(f"| {r['round']} | {r['conc']} | {label[r['system']]} | failed: {r['failed']} | | | | | | |")
        continue
    g = r["cpu_gw_ticks"] * 1e6 / meta["clk_tck"] / r["calls"] if r["calls"] else None
    errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
    w(f"| {r['round']} | {r['conc']} | {label[r['system']]} | {r['calls']:,} | {errs} | {fmt(r['throughput'])} | "
      f"{r['latency_us']['p50']} | {r['latency_us']['p99']} | {r['latency_us']['max']} | {fmt(g, 1)} |")
w("")
w("</details>")

with open(out_md, "w") as f:
    f.write("\n".join(md) + "\n")
PY
  say "wrote target/bench/compare.md"
}

# Replaces the generated section of docs/benchmarks.md with $out/compare.md.
splice_docs() {
  local docs="$repo/docs/benchmarks.md"
  if [[ ! -f "$docs" ]]; then
    printf '# Benchmarks\n\nRun `bash bench/compare.sh --write-docs` to regenerate the section below.\n\n<!-- compare:begin -->\n<!-- compare:end -->\n' >"$docs"
  fi
  python3 - "$docs" "$out/compare.md" <<'PY'
import sys

docs, gen = sys.argv[1], sys.argv[2]
text = open(docs).read()
begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
if begin not in text or end not in text or text.index(begin) > text.index(end):
    sys.exit(f"{docs}: markers {begin} … {end} not found")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
with open(docs, "w") as f:
    f.write(head + begin + "\n" + open(gen).read() + end + tail)
PY
  say "replaced the generated section of docs/benchmarks.md"
}

if ((report_only)); then
  [[ -f "$run/meta.json" ]] || { say "no finished run in target/bench/run to report"; exit 1; }
  render_report
  ((write_docs)) && splice_docs
  exit 0
fi
rm -rf "$run"
mkdir -p "$run"

ballast="$repo/target/release/ballast"
bench="$repo/target/release/ballast-bench"
limit="$repo/target/release/examples/limit_server"
clk_tck="$(getconf CLK_TCK)"

# Seconds in a ballast-bench duration (500ms, 5s, 2m), rounded up.
seconds_of() {
  local d=$1
  case "$d" in
    *ms) echo $(((${d%ms} + 999) / 1000)) ;;
    *m) echo $((${d%m} * 60)) ;;
    *s) echo "${d%s}" ;;
    *) echo "$d" ;;
  esac
}
duration_s="$(seconds_of "$DURATION")"
idle_hold_s="$(seconds_of "$IDLE_HOLD")"

for tool in jq python3 ss timeout; do
  command -v "$tool" >/dev/null || { say "needs $tool"; exit 1; }
done

# === processes ===
# STARTED holds "pid:starttime" of every process this script started; the
# start time (field 22 of /proc/PID/stat) guards against a reused PID.

STARTED=()

# Field N (≥ 3) of /proc/PID/stat; the command name may contain spaces.
proc_field() {
  local s
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
  s="${s##*) }"
  local -a f
  read -ra f <<<"$s"
  echo "${f[$(($2 - 3))]}"
}

# Is PID still the process that started at START (and not a zombie)?
alive_same() {
  local start state
  start="$(proc_field "$1" 22)" && state="$(proc_field "$1" 3)" || return 1
  [[ "$start" == "$2" && "$state" != Z ]]
}

# Is PID running (neither gone nor a zombie)?
running() {
  local state
  state="$(proc_field "$1" 3)" && [[ "$state" != Z ]]
}

# All descendants of PID (children, grandchildren, …), one per line.
descendants() {
  ps -e -o pid= -o ppid= | awk -v root="$1" '
    { kids[$2] = kids[$2] " " $1 }
    END {
      n = split(kids[root], q, " ")
      for (i = 1; i <= n; i++) {
        print q[i]
        m = split(kids[q[i]], more, " ")
        for (j = 1; j <= m; j++) q[++n] = more[j]
      }
    }'
}

# "pid:starttime" for each PID given that still exists.
tagged() {
  local p st
  for p; do
    st="$(proc_field "$p" 22 2>/dev/null)" && echo "$p:$st"
  done
  return 0
}

# Stops the given "pid:starttime" processes: SIGTERM, up to 5 s, SIGKILL.
stop_tagged() {
  local k i left
  (($# > 0)) || return 0
  for k; do
    alive_same "${k%%:*}" "${k##*:}" && kill -TERM "${k%%:*}" 2>/dev/null
  done
  for ((i = 0; i < 50; i++)); do
    left=0
    for k; do
      if alive_same "${k%%:*}" "${k##*:}"; then left=1 && break; fi
    done
    ((left)) || return 0
    sleep 0.1
  done
  for k; do
    if alive_same "${k%%:*}" "${k##*:}"; then
      say "pid ${k%%:*} ignored SIGTERM for 5 s; SIGKILL"
      kill -KILL "${k%%:*}" 2>/dev/null || true
    fi
  done
}

# Stops a process this script started, then whatever it left behind.
stop_tree() {
  local pid=$1 st kid
  st="$(proc_field "$pid" 22 2>/dev/null)" || { wait "$pid" 2>/dev/null || true; return 0; }
  local -a kids=()
  # shellcheck disable=SC2046 # one PID per word
  while read -r kid; do kids+=("$kid"); done < <(tagged $(descendants "$pid"))
  stop_tagged "$pid:$st"
  wait "$pid" 2>/dev/null || true
  stop_tagged "${kids[@]}"
}

cleanup() {
  local i k
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    k="${STARTED[$i]}"
    alive_same "${k%%:*}" "${k##*:}" && stop_tree "${k%%:*}"
  done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn LOG CMD… — runs CMD in the background (stdin /dev/null, output to
# LOG), records it in STARTED; its PID is in SPAWNED.
spawn() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 </dev/null &
  SPAWNED=$!
  STARTED+=("$SPAWNED:$(proc_field "$SPAWNED" 22 || echo gone)")
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A free loopback port for a Redis Cluster node: at most 55535, with its
# cluster bus port (10000 higher) free too; a node on a higher port refuses
# to start ("Redis port number too high").
cluster_node_port() {
  python3 -c '
import socket
for _ in range(1000):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    if port > 55535:
        continue
    bus = socket.socket()
    try:
        bus.bind(("127.0.0.1", port + 10000))
    except OSError:
        continue
    print(port)
    break
else:
    raise SystemExit("no free port at most 55535 with its cluster bus port free")
'
}

# VmRSS (KB) of one process, 0 if gone.
rss_kb() {
  local k v _
  while read -r k v _; do
    [[ "$k" == VmRSS: ]] && { echo "$v"; return 0; }
  done 2>/dev/null <"/proc/$1/status"
  echo 0
}

# Sum of PSS (KB: shared pages split among the processes sharing them)
# over the given PIDs, their descendants included.
tree_pss_kb() {
  local total=0 p k v _
  for p in $(for r; do echo "$r"; descendants "$r"; done); do
    while read -r k v _; do
      [[ "$k" == Pss: ]] && { total=$((total + v)); break; }
    done 2>/dev/null <"/proc/$p/smaps_rollup"
  done
  echo "$total"
}

# CPU ticks (utime + stime) of one process.
cpu_self() {
  local s
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || { echo 0; return 0; }
  s="${s##*) }"
  local -a f
  read -ra f <<<"$s"
  echo $((f[11] + f[12]))
}

# CPU ticks of the given PIDs and all their descendants, living and reaped
# (utime + stime + cutime + cstime of each living one). Its change over a
# run counts children that started, ended or were reaped during the run.
cpu_tree() {
  local total=0 p s
  local -a f
  for p in $(for r; do echo "$r"; descendants "$r"; done); do
    { read -r s <"/proc/$p/stat"; } 2>/dev/null || continue
    s="${s##*) }"
    read -ra f <<<"$s"
    total=$((total + f[11] + f[12] + f[13] + f[14]))
  done
  echo "$total"
}

# settle PID... — waits (at most 10 s) until PID, its descendants and the
# other PIDs have used no CPU for 0.5 s: the next load run starts on a quiet
# machine, not during the last system's clean-up after its run (freeing the
# streams it answered, a redis-server expiring keys).
settle() {
  local before after i
  for ((i = 0; i < 20; i++)); do
    before="$(cpu_tree "$@")"
    sleep 0.5
    after="$(cpu_tree "$@")"
    [[ "$before" == "$after" ]] && return 0
  done
}

# Waits until something accepts on 127.0.0.1:PORT (≤ SECS), while PID lives.
wait_listen() {
  local pid=$1 port=$2 secs=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    running "$pid" || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# Prints the listening addresses of PID and its descendants that are not
# loopback (nothing when all are 127.0.0.1).
non_loopback_listeners() {
  local p
  for p in "$1" $(descendants "$1"); do
    ss -Hltnp 2>/dev/null | awk -v pat="pid=$p," 'index($0, pat) { print $4 }'
  done | grep -v -E '^(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]):' || true
}

# === peers: install (or reuse) ===

declare -A SKIP=()   # system → why it was skipped
declare -A VERSION=()

sg_js="$peers/npm-supergateway/node_modules/supergateway/dist/index.js"
npm_proxy_js="$peers/npm-mcp-proxy/node_modules/mcp-proxy/dist/bin/mcp-proxy.mjs"
py_proxy="$peers/venv-mcp-proxy/bin/mcp-proxy"
rs_proxy="$peers/rust-mcp-proxy-$MCP_PROXY_RS_VERSION/bin/mcp-proxy"
preload="$peers/loopback.cjs"

wanted() { [[ " $SYSTEMS " == *" $1 "* ]]; }

# npm_peer SYSTEM DIR PACKAGE VERSION
npm_peer() {
  local sys=$1 dir=$2 pkg=$3 ver=$4 have=""
  have="$(node -p "require('$dir/node_modules/$pkg/package.json').version" 2>/dev/null || true)"
  if [[ "$have" != "$ver" ]]; then
    say "installing npm $pkg@$ver into $dir"
    mkdir -p "$dir"
    if ! npm install --prefix "$dir" --no-audit --no-fund --no-update-notifier \
      --cache "$peers/npm-cache" --loglevel=error "$pkg@$ver" >"$dir.install.log" 2>&1; then
      SKIP[$sys]="npm install $pkg@$ver failed: $(grep -E '^npm (ERR!|error)' "$dir.install.log" | head -2 | tr '\n' ' ')(log: ${dir#"$repo"/}.install.log)"
      return 0
    fi
    have="$(node -p "require('$dir/node_modules/$pkg/package.json').version" 2>/dev/null || true)"
  fi
  [[ "$have" == "$ver" ]] || { SKIP[$sys]="npm $pkg@$ver: not found after install"; return 0; }
  VERSION[$sys]="$pkg $have (npm), node $(node --version)"
}

install_peers() {
  if wanted supergateway || wanted mcp-proxy-npm; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
      wanted supergateway && SKIP[supergateway]="node/npm not installed"
      wanted mcp-proxy-npm && SKIP[mcp-proxy-npm]="node/npm not installed"
    else
      wanted supergateway && npm_peer supergateway "$peers/npm-supergateway" supergateway "$SUPERGATEWAY_VERSION"
      wanted mcp-proxy-npm && npm_peer mcp-proxy-npm "$peers/npm-mcp-proxy" mcp-proxy "$MCP_PROXY_NPM_VERSION"
    fi
  fi

  if wanted mcp-proxy-py; then
    local venv="$peers/venv-mcp-proxy" have=""
    have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp-proxy"))' 2>/dev/null || true)"
    if [[ "$have" != "$MCP_PROXY_PY_VERSION" ]]; then
      say "installing PyPI mcp-proxy==$MCP_PROXY_PY_VERSION into $venv"
      if { [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"; } >"$venv.install.log" 2>&1 &&
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
          --cache-dir "$peers/pip-cache" "mcp-proxy==$MCP_PROXY_PY_VERSION" >>"$venv.install.log" 2>&1; then
        have="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp-proxy"))' 2>/dev/null || true)"
      else
        SKIP[mcp-proxy-py]="pip install mcp-proxy==$MCP_PROXY_PY_VERSION failed: $(tail -2 "$venv.install.log" | tr '\n' ' ')(log: ${venv#"$repo"/}.install.log)"
      fi
    fi
    if [[ -z "${SKIP[mcp-proxy-py]:-}" ]]; then
      if [[ "$have" == "$MCP_PROXY_PY_VERSION" && -x "$py_proxy" ]]; then
        VERSION[mcp-proxy-py]="mcp-proxy $have (PyPI), mcp SDK $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))'), $("$venv/bin/python" --version)"
      else
        SKIP[mcp-proxy-py]="mcp-proxy==$MCP_PROXY_PY_VERSION: not found after install"
      fi
    fi
  fi

  if wanted mcp-proxy-rs; then
    local root="$peers/rust-mcp-proxy-$MCP_PROXY_RS_VERSION"
    if [[ ! -x "$rs_proxy" ]] || ! grep -q "^\"mcp-proxy $MCP_PROXY_RS_VERSION " "$root/.crates.toml" 2>/dev/null; then
      say "installing crates.io mcp-proxy $MCP_PROXY_RS_VERSION into $root (a long compile, once; log: $root.install.log)"
      if ! nice -n 10 cargo install --locked --jobs "${BENCH_CARGO_JOBS:-2}" --root "$root" \
        --version "$MCP_PROXY_RS_VERSION" mcp-proxy >"$root.install.log" 2>&1; then
        SKIP[mcp-proxy-rs]="cargo install mcp-proxy $MCP_PROXY_RS_VERSION failed: $(grep -m2 -E '^error' "$root.install.log" | tr '\n' ' ')(log: ${root#"$repo"/}.install.log)"
      fi
    fi
    if [[ -z "${SKIP[mcp-proxy-rs]:-}" ]]; then
      if [[ -x "$rs_proxy" ]]; then
        VERSION[mcp-proxy-rs]="mcp-proxy $MCP_PROXY_RS_VERSION (crates.io, default features, cargo install --locked)"
      else
        SKIP[mcp-proxy-rs]="mcp-proxy $MCP_PROXY_RS_VERSION: no binary after cargo install"
      fi
    fi
  fi

  # Node servers listen on every interface unless told a host; supergateway
  # cannot be told, so a preload gives net.Server#listen a loopback default.
  cat >"$preload" <<'JS'
'use strict';
// node --require preload: net.Server#listen without a host binds 127.0.0.1.
const net = require('net');
const orig = net.Server.prototype.listen;
net.Server.prototype.listen = function listen(...args) {
  const a0 = args[0];
  const isPort = (v) => typeof v === 'number' ||
    (typeof v === 'string' && v.trim() !== '' && Number.isInteger(Number(v)));
  if (args.length === 0 || typeof a0 === 'function') {
    args.unshift(0, '127.0.0.1');
  } else if (isPort(a0) && typeof args[1] !== 'string') {
    args.splice(1, 0, '127.0.0.1');
  } else if (a0 && typeof a0 === 'object' && a0.host == null && a0.path == null &&
             a0.fd === undefined && a0.handle === undefined && a0._handle === undefined) {
    args[0] = Object.assign({}, a0, { host: '127.0.0.1' });
  }
  return orig.apply(this, args);
};
JS
}

# === the systems ===

label_of() {
  case "$1" in
    limit) echo "limit" ;;
    ballast) echo "ballast" ;;
    ballast-off) echo "ballast (policies off)" ;;
    ballast-redis) echo "ballast (redis store)" ;;
    ballast-redis-cluster) echo "ballast (redis cluster store, 3 nodes)" ;;
    supergateway) echo "supergateway" ;;
    mcp-proxy-py) echo "mcp-proxy (Python)" ;;
    mcp-proxy-npm) echo "mcp-proxy (npm)" ;;
    mcp-proxy-rs) echo "mcp-proxy (Rust)" ;;
    *) echo "$1" ;;
  esac
}

REDIS_PORT=""
REDIS_PID=""

start_redis() {
  command -v redis-server >/dev/null || { SKIP[ballast-redis]="redis-server not installed"; return 0; }
  REDIS_PORT="$(free_port)"
  spawn "$run/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --save "" --appendonly no --loglevel warning
  REDIS_PID=$SPAWNED
  if ! wait_listen "$REDIS_PID" "$REDIS_PORT" 10; then
    SKIP[ballast-redis]="redis-server did not start: $(tail -2 "$run/redis.log" | tr '\n' ' ')"
    REDIS_PID=""
  fi
}

CLUSTER_PORTS=""
CLUSTER_PIDS=""

# Starts a 3-node Redis Cluster (primaries only, slots split in thirds) for
# ballast-redis-cluster; on failure marks that system skipped.
start_redis_cluster() {
  local i port dir ranges=("0 5460" "5461 10922" "10923 16383") first="" state
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
    { SKIP[ballast-redis-cluster]="redis-server or redis-cli not installed"; return 0; }
  for i in 0 1 2; do
    port="$(cluster_node_port)" || { SKIP[ballast-redis-cluster]="no free port for a cluster node"; return 0; }
    dir="$run/cluster-$i"
    rm -rf "$dir" && mkdir -p "$dir"
    spawn "$run/cluster-$i.log" redis-server --port "$port" --bind 127.0.0.1 \
      --save "" --appendonly no --loglevel warning --cluster-enabled yes --dir "$dir"
    if ! wait_listen "$SPAWNED" "$port" 10; then
      SKIP[ballast-redis-cluster]="cluster node did not start: $(tail -2 "$run/cluster-$i.log" | tr '\n' ' ')"
      return 0
    fi
    CLUSTER_PIDS+="${CLUSTER_PIDS:+ }$SPAWNED"
    CLUSTER_PORTS+="${CLUSTER_PORTS:+ }$port"
    # shellcheck disable=SC2086
    redis-cli -p "$port" CLUSTER ADDSLOTSRANGE ${ranges[$i]} >/dev/null
    if [[ -z "$first" ]]; then first=$port; else redis-cli -p "$first" CLUSTER MEET 127.0.0.1 "$port" >/dev/null; fi
  done
  for ((i = 0; i < 200; i++)); do
    state=0
    for port in $CLUSTER_PORTS; do
      redis-cli -p "$port" CLUSTER INFO | grep -q '^cluster_state:ok' && state=$((state + 1))
    done
    ((state == 3)) && return 0
    sleep 0.1
  done
  SKIP[ballast-redis-cluster]="the 3-node cluster never reached cluster_state:ok"
}

# Writes the Ballast config of SYSTEM (listening on PORT) to $run/SYSTEM.toml.
ballast_config() {
  local sys=$1 port=$2 cfg="$run/$1.toml"
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\n\n[log]\nlevel = "warn"\n\n' "$port"
    if [[ "$sys" == ballast-redis ]]; then
      printf '[store]\nkind = "redis"\nurl = "redis://127.0.0.1:%s"\ndeployment = "bench"\n\n' "$REDIS_PORT"
    fi
    if [[ "$sys" == ballast-redis-cluster ]]; then
      local nodes="" p
      for p in $CLUSTER_PORTS; do nodes+="${nodes:+,}127.0.0.1:$p"; done
      printf '[store]\nkind = "redis"\nurl = "redis+cluster://%s"\ndeployment = "bench"\n\n' "$nodes"
    fi
    printf '[upstreams.demo]\ncommand = "%s"\nargs = ["demo-upstream"]\n' "$ballast"
    if [[ "$sys" == ballast-off ]]; then
      printf 'retry = { max_attempts = 1 }\ncache = { enabled = false }\n'
      printf 'bulkhead = { max_concurrent = 0 }\nbreaker = { enabled = false }\n'
    fi
  } >"$cfg"
}

# Writes the mcp-proxy (Rust) config (listening on PORT).
rs_config() {
  cat >"$run/mcp-proxy-rs.toml" <<EOF
[proxy]
name = "bench"

[proxy.listen]
host = "127.0.0.1"
port = $1

[[backends]]
name = "demo"
transport = "stdio"
command = "$ballast"
args = ["demo-upstream"]

[observability]
log_level = "warn"
EOF
}

# start_system SYSTEM PHASE — starts SYSTEM on a free port. Sets SYS_PID,
# SYS_URL, SYS_TOOL, SYS_CMD (for the report), SYS_EXTRA (other PIDs whose
# CPU and memory belong to it: the redis-server); on failure returns 1 with
# SYS_ERR.
start_system() {
  local sys=$1 phase=$2 port log bad
  port="$(free_port)"
  log="$run/$sys.$phase.log"
  SYS_URL="http://127.0.0.1:$port/mcp"
  SYS_TOOL="echo"
  SYS_EXTRA=""
  SYS_ERR=""
  local -a cmd
  case "$sys" in
    limit) cmd=("$limit" "$port") ;;
    ballast | ballast-off | ballast-redis | ballast-redis-cluster)
      ballast_config "$sys" "$port"
      if ! "$ballast" check-config "$run/$sys.toml" >/dev/null 2>"$run/$sys.check.log"; then
        SYS_ERR="invalid config: $(tail -1 "$run/$sys.check.log")"
        return 1
      fi
      cmd=("$ballast" serve --config "$run/$sys.toml")
      [[ "$sys" == ballast-redis ]] && SYS_EXTRA="$REDIS_PID"
      [[ "$sys" == ballast-redis-cluster ]] && SYS_EXTRA="$CLUSTER_PIDS"
      ;;
    supergateway)
      cmd=(node --require "$preload" "$sg_js" --stdio "$ballast demo-upstream"
        --outputTransport streamableHttp --stateful --port "$port"
        --streamableHttpPath /mcp --logLevel none)
      ;;
    mcp-proxy-py)
      cmd=("$py_proxy" --host 127.0.0.1 --port "$port" --log-level WARNING -- "$ballast" demo-upstream)
      ;;
    mcp-proxy-npm)
      cmd=(node "$npm_proxy_js" --host 127.0.0.1 --port "$port" --server stream -- "$ballast" demo-upstream)
      ;;
    mcp-proxy-rs)
      rs_config "$port"
      cmd=("$rs_proxy" --config "$run/mcp-proxy-rs.toml")
      SYS_URL="http://127.0.0.1:$port/" # MCP at /, tools named <backend>/<tool>
      SYS_TOOL=demo/echo
      ;;
    *) SYS_ERR="unknown system" && return 1 ;;
  esac
  local a
  SYS_CMD=""
  for a in "${cmd[@]}"; do
    [[ "$a" == *" "* ]] && a="\"$a\""
    SYS_CMD+="${SYS_CMD:+ }$a"
  done
  SYS_CMD="${SYS_CMD//$repo\//}"
  spawn "$log" "${cmd[@]}"
  SYS_PID=$SPAWNED
  if ! wait_listen "$SYS_PID" "$port" 60; then
    if running "$SYS_PID"; then
      SYS_ERR="did not listen on 127.0.0.1:$port within 60 s"
      stop_tree "$SYS_PID"
    else
      local rc=0
      wait "$SYS_PID" || rc=$?
      SYS_ERR="exited at start (status $rc)"
    fi
    SYS_ERR+="; log: $(grep -v '^$' "$log" | tail -3 | tr '\n' ' ')"
    return 1
  fi
  bad="$(non_loopback_listeners "$SYS_PID")"
  if [[ -n "$bad" ]]; then
    SYS_ERR="listens beyond loopback (${bad//$'\n'/ }); stopped"
    stop_tree "$SYS_PID"
    return 1
  fi
  return 0
}

# A 10-call tools/call run; returns 1 with SYS_ERR unless all 10 succeed.
smoke() {
  local res
  res="$(timeout -k 5 60 "$bench" --url "$SYS_URL" --tool "$SYS_TOOL" -c 1 -s 1 \
    --calls 10 --timeout "$CALL_TIMEOUT" --json 2>"$run/smoke.err")" || true
  if [[ "$(jq -r 'select(.calls == 10 and .error_total == 0) | "ok"' <<<"$res" 2>/dev/null)" != ok ]]; then
    SYS_ERR="smoke run (10 calls of $SYS_TOOL at $SYS_URL) failed: ${res:-$(tail -2 "$run/smoke.err" | tr '\n' ' ')}"
    return 1
  fi
}

skip() {
  SKIP[$1]="$2"
  say "SKIP $(label_of "$1"): $2"
}

active() {
  local sys
  for sys in $SYSTEMS; do
    [[ -z "${SKIP[$sys]:-}" ]] && echo "$sys"
  done
  return 0
}

# === build ===

if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
  say "building ballast, ballast-bench and the limit server (release)"
  cargo build --release --bins --example limit_server >&2
fi
for f in "$ballast" "$bench" "$limit"; do
  [[ -x "$f" ]] || { say "missing $f (cargo build --release --bins --example limit_server)"; exit 1; }
done

for sys in $SYSTEMS; do
  [[ " $ALL_SYSTEMS " == *" $sys "* ]] || { say "unknown system '$sys' (known: $ALL_SYSTEMS)"; exit 2; }
done

install_peers
for sys in $SYSTEMS; do
  [[ -n "${SKIP[$sys]:-}" ]] && say "SKIP $(label_of "$sys"): ${SKIP[$sys]}"
done
wanted ballast-redis && [[ -z "${SKIP[ballast-redis]:-}" ]] && start_redis
wanted ballast-redis-cluster && [[ -z "${SKIP[ballast-redis-cluster]:-}" ]] && start_redis_cluster

VERSION[limit]="examples/limit_server.rs: hyper $(awk '/^name = "hyper"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock), tokio $(awk '/^name = "tokio"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)"
ballast_version="$("$ballast" --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
VERSION[ballast]="$ballast_version"
VERSION[ballast-off]="$ballast_version"
VERSION[ballast-redis]="$ballast_version, $(redis-server --version 2>/dev/null | awk '{ print "redis " $3 }' | tr -d 'v=')"
VERSION[ballast-redis-cluster]="${VERSION[ballast-redis]}"

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
t_start=$SECONDS

# === phase 1: memory, one system at a time ===

say "phase 1: RSS idle and with $IDLE_SESSIONS idle sessions, one system at a time"
: >"$run/memory.jsonl"
for sys in $(active); do
  if ! start_system "$sys" memory; then
    skip "$sys" "$SYS_ERR"
    continue
  fi
  sleep 1
  rss_idle="$(rss_kb "$SYS_PID")"
  tree_idle="$(tree_pss_kb "$SYS_PID" $SYS_EXTRA)"
  kids_idle="$(descendants "$SYS_PID" | wc -l)"
  if ! smoke; then
    skip "$sys" "$SYS_ERR"
    stop_tree "$SYS_PID"
    continue
  fi
  spawn "$run/$sys.idle.out" timeout -k 5 $((idle_hold_s + 300)) "$bench" --url "$SYS_URL" \
    --tool "$SYS_TOOL" --idle-sessions "$IDLE_SESSIONS" --hold "$IDLE_HOLD" --timeout 30s
  idle_pid=$SPAWNED
  opened=0 rss_sess=0 tree_sess=0 kids_sess=0
  for ((i = 0; i < 3000; i++)); do
    grep -q '^opened ' "$run/$sys.idle.out" && break
    running "$idle_pid" || break
    sleep 0.1
  done
  if grep -q '^opened ' "$run/$sys.idle.out"; then
    opened="$(awk '/^opened / { print $2; exit }' "$run/$sys.idle.out")"
    sleep 1
    rss_sess="$(rss_kb "$SYS_PID")"
    tree_sess="$(tree_pss_kb "$SYS_PID" $SYS_EXTRA)"
    kids_sess="$(descendants "$SYS_PID" | wc -l)"
  fi
  wait "$idle_pid" 2>/dev/null || true
  jq -nc --arg system "$sys" --argjson rss_idle "$rss_idle" --argjson tree_idle "$tree_idle" \
    --argjson kids_idle "$kids_idle" --argjson asked "$IDLE_SESSIONS" --argjson opened "${opened:-0}" \
    --argjson rss_sess "$rss_sess" --argjson tree_sess "$tree_sess" --argjson kids_sess "$kids_sess" \
    --arg note "$(grep -v -E '^(opened|closed) ' "$run/$sys.idle.out" | tail -2 | tr '\n' ' ')" \
    '{system: $system, rss_idle_kb: $rss_idle, tree_idle_kb: $tree_idle, children_idle: $kids_idle,
      sessions_asked: $asked, sessions_opened: $opened, rss_sessions_kb: $rss_sess,
      tree_sessions_kb: $tree_sess, children_sessions: $kids_sess, note: $note}' >>"$run/memory.jsonl"
  say "$(label_of "$sys"): RSS idle $((rss_idle / 1024)) MB; with ${opened:-0}/$IDLE_SESSIONS sessions $((rss_sess / 1024)) MB (gateway + children $((tree_sess / 1024)) MB, $kids_sess children)"
  stop_tree "$SYS_PID"
done

# === phase 2: load, all systems side by side, interleaved ===

say "phase 2: load runs: $ROUNDS rounds × c in {$CONCURRENCY} × systems, $DURATION each, $SESSIONS sessions"
declare -A PID_OF=() URL_OF=() TOOL_OF=() EXTRA_OF=() CMD_OF=()
for sys in $(active); do
  if ! start_system "$sys" load; then
    skip "$sys" "$SYS_ERR"
    continue
  fi
  if ! smoke; then
    skip "$sys" "$SYS_ERR"
    stop_tree "$SYS_PID"
    continue
  fi
  PID_OF[$sys]=$SYS_PID URL_OF[$sys]=$SYS_URL TOOL_OF[$sys]=$SYS_TOOL
  EXTRA_OF[$sys]=$SYS_EXTRA CMD_OF[$sys]=$SYS_CMD
done

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
: >"$run/runs.jsonl"
for ((round = 1; round <= ROUNDS; round++)); do
  for c in $CONCURRENCY; do
    for sys in $(active); do
      pid="${PID_OF[$sys]}"
      if ! running "$pid"; then
        skip "$sys" "exited during the load runs (round $round, c=$c; log: target/bench/run/$sys.load.log)"
        continue
      fi
      gw0="$(cpu_self "$pid")"
      tr0="$(cpu_tree "$pid" ${EXTRA_OF[$sys]})"
      rc=0
      res="$(timeout -k 5 $((duration_s + 120)) "$bench" --url "${URL_OF[$sys]}" --tool "${TOOL_OF[$sys]}" \
        -c "$c" -s "$SESSIONS" -d "$DURATION" -n "$MAX_CALLS" --timeout "$CALL_TIMEOUT" \
        --json 2>"$run/bench.err")" || rc=$?
      gw1="$(cpu_self "$pid")"
      tr1="$(cpu_tree "$pid" ${EXTRA_OF[$sys]})"
      if [[ $rc == 0 ]] && jq -e '.calls' <<<"$res" >/dev/null 2>&1; then
        jq -c --arg system "$sys" --argjson round "$round" --argjson conc "$c" \
          --argjson gw $((gw1 - gw0)) --argjson tree $((tr1 - tr0)) \
          '. + {system: $system, round: $round, conc: $conc, cpu_gw_ticks: $gw, cpu_tree_ticks: $tree}' \
          <<<"$res" >>"$run/runs.jsonl"
        say "round $round c=$c $(label_of "$sys"): $(jq -r '"\(.throughput | floor) calls/s, p50 \(.latency_us.p50) µs, p99 \(.latency_us.p99) µs, errors \(.error_total)"' <<<"$res")"
      else
        why="exit $rc: $(tail -2 "$run/bench.err" | tr '\n' ' ')"
        jq -nc --arg system "$sys" --argjson round "$round" --argjson conc "$c" --arg why "$why" \
          '{system: $system, round: $round, conc: $conc, failed: $why}' >>"$run/runs.jsonl"
        say "round $round c=$c $(label_of "$sys"): run failed ($why)"
      fi
      settle "$pid" ${EXTRA_OF[$sys]}
    done
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

for sys in $(active); do
  stop_tree "${PID_OF[$sys]}"
done
[[ -n "$REDIS_PID" ]] && stop_tree "$REDIS_PID"
say "measuring took $((SECONDS - t_start)) s"

# === report ===

: >"$run/systems.jsonl"
for sys in $SYSTEMS; do
  jq -nc --arg system "$sys" --arg lbl "$(label_of "$sys")" --arg version "${VERSION[$sys]:-}" \
    --arg command "${CMD_OF[$sys]:-}" --arg url "${URL_OF[$sys]:-}" --arg tool "${TOOL_OF[$sys]:-echo}" \
    --arg skipped "${SKIP[$sys]:-}" \
    '{system: $system, label: $lbl, version: $version, command: $command, url: $url, tool: $tool, skipped: $skipped}' \
    >>"$run/systems.jsonl"
done

cpu_model="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
jq -n --arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" --arg cores "$(nproc)" --arg cpu "${cpu_model:-unknown}" \
  --arg mem "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" \
  --arg kernel "$(uname -sr)" --arg rustc "$(rustc --version 2>/dev/null || echo '?')" \
  --arg bench "$("$bench" --version)" --arg load_start "$load_start" --arg load_before "$load_before" \
  --arg load_after "$load_after" --arg duration "$DURATION" --argjson rounds "$ROUNDS" \
  --arg conc "$CONCURRENCY" --argjson sessions "$SESSIONS" --argjson idle "$IDLE_SESSIONS" \
  --arg idle_hold "$IDLE_HOLD" --argjson clk "$clk_tck" --arg quick "${BENCH_QUICK:-0}" \
  --arg upstream "target/release/ballast demo-upstream" --arg wall "$((SECONDS - t_start))" \
  '{date: $date, cores: $cores, cpu: $cpu, memory: $mem, kernel: $kernel, rustc: $rustc,
    bench: $bench, load_start: $load_start, load_before: $load_before, load_after: $load_after,
    duration: $duration, rounds: $rounds, concurrency: ($conc | split(" ") | map(select(. != "") | tonumber)),
    sessions: $sessions, idle_sessions: $idle, idle_hold: $idle_hold, clk_tck: $clk,
    quick: ($quick == "1"), upstream: $upstream, wall_s: ($wall | tonumber)}' >"$run/meta.json"

render_report
((write_docs)) && splice_docs
exit 0