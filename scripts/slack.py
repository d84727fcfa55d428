#!/usr/bin/env python3
"""The runs with the least slack against their bounds, from JUnit files.

    scripts/slack.py [--top N] FILE...

Reads the conformance runner's JUnit (`--junit FILE`; scripts/check-matrix.sh writes
target/conformance/junit.xml) and nextest's (target/nextest/default/junit.xml), and
prints, for each kind, the N runs (default 10) that used the largest share of their
bound: the next flakes on a busier machine.

- A conformance cell's bound is its tightest bounded wait, from the line
  `tightest wait: WHAT: TOOK ms of its BOUND ms bound` of its <system-out>: the wait
  that used the largest share of its bound, the whole case against its 300 s limit
  among them.
- A test's bound is nextest's: the default profile's slow-timeout period times its
  terminate-after, read from .config/nextest.toml (the time after which nextest ends
  it), against the test's time.

Skipped testcases (not run, unsupported) are left out; failed ones are kept (a
timed-out wait used its whole bound). Nothing is printed for a file that does not
exist, so a caller can name files a run may not have written.
"""

import argparse
import os
import re
import sys
import xml.etree.ElementTree as ElementTree

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nextest_bound_ms():
    """The default profile's slow-timeout period times terminate-after, in ms."""
    path = os.path.join(ROOT, ".config", "nextest.toml")
    with open(path, encoding="utf-8") as config:
        text = config.read()
    found = re.search(
        r'^slow-timeout\s*=\s*\{\s*period\s*=\s*"(\d+)s"\s*,\s*terminate-after\s*=\s*(\d+)\s*\}',
        text,
        re.M,
    )
    if not found:
        sys.exit(f"slack: no slow-timeout with terminate-after in {path}")
    return int(found.group(1)) * int(found.group(2)) * 1000


# The line the runner's JUnit writes into a cell's <system-out>.
TIGHTEST = re.compile(r"^tightest wait: (?P<what>.*): (?P<took>\d+) ms of its (?P<bound>\d+) ms bound$", re.M)


def runs(path, test_bound_ms):
    """(kind, name, what, took_ms, bound_ms) for each testcase of the file that ran."""
    tree = ElementTree.parse(path)
    for case in tree.iter("testcase"):
        if case.find("skipped") is not None:
            continue
        name = f"{case.get('classname', '')} {case.get('name', '')}".strip()
        tightest = None
        for out in case.findall("system-out"):
            tightest = TIGHTEST.search(out.text or "") or tightest
        if tightest:
            yield (
                "case",
                name,
                tightest.group("what"),
                int(tightest.group("took")),
                int(tightest.group("bound")),
            )
        else:
            took = round(float(case.get("time", "0")) * 1000)
            yield ("test", name, "the whole test", took, test_bound_ms)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    test_bound = nextest_bound_ms()
    found = []
    for path in args.files:
        if os.path.exists(path):
            found.extend(runs(path, test_bound))
    for kind, title in (("case", "conformance cells"), ("test", "tests")):
        rows = [row for row in found if row[0] == kind]
        if not rows:
            continue
        rows.sort(key=lambda row: row[3] / row[4] if row[4] else 1.0, reverse=True)
        print(f"\nthe {min(args.top, len(rows))} {title} with the least slack (of {len(rows)}):")
        print(f"  {'used':>5}  {'slack':>9}  {'took':>9}  {'bound':>9}  run: tightest wait")
        for _, name, what, took, bound in rows[: args.top]:
            used = took / bound if bound else 1.0
            detail = f"{name}: {what}" if kind == "case" else name
            print(
                f"  {used:5.0%}  {(bound - took) / 1000:8.1f}s  {took / 1000:8.1f}s  "
                f"{bound / 1000:8.1f}s  {detail[:150]}"
            )


if __name__ == "__main__":
    main()
