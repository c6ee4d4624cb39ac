#!/usr/bin/env python3
"""Judge a conformance run (scripts/conformance.sh) and print its report.

    report.py RUN_DIR BASELINE_FILE [--versions TEXT] [--markdown OUT]

RUN_DIR/<suite>/<target>/<scenario>-<timestamp>/checks.json, as the suite's
`-o` writes them (server scenarios are prefixed `server-`). Targets:
  direct   server-everything over Streamable HTTP, no gateway (the reference)
  ballast  Ballast in front of server-everything over stdio
  fixture  Ballast (max_stream_duration 2s) in front of fixture_upstream.py,
           the gateway's own scenarios only
  client   the suite's client scenarios, Ballast being the client (its
           upstream side), via client-via-ballast.sh
A scenario passes when none of its checks is a FAILURE (WARNINGs are counted
but do not fail it, as in the suite's own summary).

Rules (each broken rule is a violation unless the baseline lists it):
  1. a scenario that passes direct passes through Ballast (same suite);
  2. a scenario that fails both ways fails through Ballast only in checks
     that also fail direct (no new failing check);
  3. the gateway's own scenarios (GATEWAY_OWN) pass on every Ballast target,
     on the fixture target with FIXTURE_REQUIRED_CHECKS all SUCCESS;
  4. every client scenario passes;
  5. every scenario run direct has a result through Ballast.
Baseline lines: `<target>[@<suite>] <scenario>  # reason`.
Exit 1 on any violation not in the baseline; 2 on unusable input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

GATEWAY_OWN = {
    "dns-rebinding-protection",
    "server-session-lifecycle",
    "server-sse-polling",
    "server-sse-multiple-streams",
}
# On the fixture target these checks must be SUCCESS, not just "no FAILURE":
# the suite only warns when a server sends no priming event or no retry:, or
# leaves the resume untested, and those are exactly the gateway's job there.
FIXTURE_REQUIRED_CHECKS = {
    "server-sse-polling": {"server-sse-priming-event", "server-sse-retry-field", "server-sse-disconnect-resume"},
}
SUITES = ["stable", "alpha"]
TS = re.compile(r"-\d{4}-\d\d-\d\dT[\d-]+Z$")


def load(run: Path) -> dict:
    """{(suite, target): {scenario: {"fail": set(ids), "warn": n, "ok": n}}}"""
    out: dict = defaultdict(dict)
    for f in sorted(run.glob("*/*/*/checks.json")):
        scen_dir, target_dir, suite_dir = f.parent, f.parent.parent, f.parent.parent.parent
        name = TS.sub("", scen_dir.name)
        if target_dir.name != "client" and name.startswith("server-"):
            name = name[len("server-"):]
        checks = json.loads(f.read_text())
        fails = {c.get("id", "?") for c in checks if c.get("status") == "FAILURE"}
        if target_dir.name == "fixture":
            ok = {c.get("id") for c in checks if c.get("status") == "SUCCESS"}
            for cid in FIXTURE_REQUIRED_CHECKS.get(name, set()) - ok:
                fails.add(f"{cid} (not SUCCESS)")
        out[(suite_dir.name, target_dir.name)][name] = {
            "fail": fails,
            "warn": sum(1 for c in checks if c.get("status") == "WARNING"),
            "ok": sum(1 for c in checks if c.get("status") == "SUCCESS"),
            "errors": [c.get("errorMessage", "") for c in checks if c.get("status") == "FAILURE"],
        }
    return out


def load_baseline(path: Path) -> dict:
    entries = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        body, _, reason = line.partition("#")
        parts = body.split()
        if not parts:
            continue
        if len(parts) != 2:
            sys.exit(f"{path}:{n}: expected `<target>[@<suite>] <scenario>  # reason`")
        entries[(parts[0], parts[1])] = reason.strip()
    return entries


def baselined(baseline: dict, suite: str, target: str, scenario: str) -> tuple | None:
    for key in ((f"{target}@{suite}", scenario), (target, scenario)):
        if key in baseline:
            return key
    return None


def cell(r: dict | None) -> str:
    if r is None:
        return "–"
    s = "FAIL" if r["fail"] else "pass"
    if r["warn"]:
        s += f" ({r['warn']}w)"
    return s


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("baseline", type=Path)
    ap.add_argument("--versions", default="")
    ap.add_argument("--markdown", type=Path)
    a = ap.parse_args()

    res = load(a.run)
    baseline = load_baseline(a.baseline)
    for suite in SUITES:
        for target in ("direct", "ballast"):
            if not res.get((suite, target)):
                print(f"conformance: no results for {suite}/{target} in {a.run}", file=sys.stderr)
                return 2

    violations: list[tuple] = []  # (suite, target, scenario, why)
    for suite in SUITES:
        direct = res[(suite, "direct")]
        for target in ("ballast", "fixture", "client"):
            got = res.get((suite, target), {})
            if target == "ballast":
                for scen in sorted(set(direct) - set(got)):
                    violations.append((suite, target, scen, "no result through Ballast"))
            for scen, r in sorted(got.items()):
                d = direct.get(scen)
                if target == "client":
                    if r["fail"]:
                        violations.append((suite, target, scen, "client scenario fails: " + "; ".join(r["errors"])[:300]))
                    continue
                if scen in GATEWAY_OWN and r["fail"]:
                    violations.append((suite, target, scen, "gateway's own scenario fails: " + ", ".join(sorted(r["fail"]))))
                    continue
                if target != "ballast" or not r["fail"]:
                    continue
                if d is not None and not d["fail"]:
                    violations.append((suite, target, scen, "passes direct, fails through Ballast: " + ", ".join(sorted(r["fail"]))))
                elif d is not None and r["fail"] - d["fail"]:
                    violations.append((suite, target, scen, "new failing checks through Ballast: " + ", ".join(sorted(r["fail"] - d["fail"]))))

    used = set()
    unexpected = []
    for v in violations:
        key = baselined(baseline, *v[:3])
        if key:
            used.add(key)
        else:
            unexpected.append(v)

    # Counts.
    print("conformance counts (scenarios; a scenario passes with no FAILURE check):")
    for suite in SUITES:
        for target in ("direct", "ballast", "fixture", "client"):
            got = res.get((suite, target), {})
            if not got:
                continue
            p = sum(1 for r in got.values() if not r["fail"])
            w = sum(r["warn"] for r in got.values())
            print(f"  {suite:6} {target:8} pass={p:<3} fail={len(got) - p:<3} warnings={w:<3} scenarios={len(got)}")

    md = render(res, baseline, a.versions)
    if a.markdown:
        a.markdown.write_text(md)
    print()
    print(md)

    for key in sorted(set(baseline) - used):
        print(f"conformance: NOTE baseline entry no longer needed: {key[0]} {key[1]}")
    for suite, target, scen, why in violations:
        key = baselined(baseline, suite, target, scen)
        if key:
            print(f"conformance: expected (baseline): {suite}/{target} {scen}: {baseline[key] or why}")
    for suite, target, scen, why in unexpected:
        print(f"conformance: UNEXPECTED {suite}/{target} {scen}: {why}")
    if unexpected:
        print(f"conformance: FAILED, {len(unexpected)} unexpected result(s) (see above; baseline: {a.baseline})")
        return 1
    print("conformance: OK, no unexpected results")
    return 0


def render(res: dict, baseline: dict, versions: str) -> str:
    lines = []
    if versions:
        lines += [versions.strip(), ""]
    lines += [
        "Server scenarios. direct = server-everything over Streamable HTTP; "
        "Ballast = Ballast in front of server-everything over stdio; "
        "fixture = Ballast (max_stream_duration 2s) in front of conformance/fixture_upstream.py "
        "(gateway's own scenarios only). `(Nw)` = N warnings; ★ = the gateway's own job.",
        "",
        "| scenario | stable direct | stable Ballast | alpha direct | alpha Ballast | fixture stable / alpha |",
        "|---|---|---|---|---|---|",
    ]
    names = sorted({s for (suite, t), g in res.items() if t != "client" for s in g},
                   key=lambda s: (s not in GATEWAY_OWN, s))
    for s in names:
        g = lambda suite, t: cell(res.get((suite, t), {}).get(s))
        star = " ★" if s in GATEWAY_OWN else ""
        lines.append(
            f"| {s}{star} | {g('stable', 'direct')} | {g('stable', 'ballast')} | "
            f"{g('alpha', 'direct')} | {g('alpha', 'ballast')} | {g('stable', 'fixture')} / {g('alpha', 'fixture')} |"
        )
    lines += ["", "Counts (scenarios passed / run):", ""]
    lines += ["| run | stable | alpha |", "|---|---|---|"]
    for t in ("direct", "ballast", "fixture", "client"):
        row = []
        for suite in SUITES:
            got = res.get((suite, t), {})
            row.append(f"{sum(1 for r in got.values() if not r['fail'])} / {len(got)}" if got else "–")
        lines.append(f"| {t} | {row[0]} | {row[1]} |")
    clients = sorted({s for (suite, t), g in res.items() if t == "client" for s in g})
    if clients:
        lines += ["", "Client scenarios (Ballast as the client: mock server → Ballast's HTTP upstream):", "",
                  "| scenario | stable | alpha |", "|---|---|---|"]
        for s in clients:
            lines.append(f"| {s} | {cell(res.get(('stable', 'client'), {}).get(s))} | "
                         f"{cell(res.get(('alpha', 'client'), {}).get(s))} |")
    if baseline:
        lines += ["", "Expected failures (conformance/baseline.txt):", ""]
        lines += [f"- `{t} {s}`: {r}" for (t, s), r in sorted(baseline.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
