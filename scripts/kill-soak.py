#!/usr/bin/env python3
"""A fleet of `distsync` processes whose members are SIGKILLed alone, as the OOM killer
or a supervisor that signals one PID does, and started again: the check that a CMD
never outlives its holder, over minutes rather than a test's seconds.

    scripts/kill-soak.py URL shards  [--members 3] [--seconds 150]
    scripts/kill-soak.py URL schedule [--members 3] [--seconds 150]

`shards` runs `distsync shards NAME 16 -- CMD` (`--shards N` for another count); `schedule` runs `distsync schedule NAME
2s --ttl 2s -- CMD` with a CMD of 1 to 4 s, longer than the TTL. Every 5 to 20 s one
member's `distsync` gets SIGKILL (nothing else of its process tree does), and a new
member starts in its place.

Each CMD writes its own pid, a background child's pid and what it owns (its shards, or
`all` for a scheduled run) to a file of its own, then checks that no other CMD still
running owns any of the same: a CMD that finds one records an overlap. After each kill
the script polls until every process of the killed member's tree (its watchdog, CMD
and CMD's child) has ended, and reports the longest such lifetime.

Prints one line of figures; exits 1 on any overlap or a process that outlived its
`distsync` by more than --bound seconds (default 1).
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# What each CMD runs: records itself first (so that two CMDs starting together see
# each other), then looks for another running CMD owning one of its shards.
CMD = r"""
d="$SOAK_DIR"; me="$d/$$.pids"; mine=${DISTSYNC_SHARDS-all}
run=300; [ -n "$SOAK_SHORT" ] && run=$((1 + $$ % 4))
sleep "$run" & echo "$$ $! $mine" > "$me.tmp" && mv "$me.tmp" "$me"
for f in "$d"/*.pids; do
  [ -e "$f" ] && [ "$f" != "$me" ] || continue
  read -r pids shards < "$f"
  for p in $pids; do
    if [ -r /proc/$p/stat ] && [ "$(cut -d' ' -f3 /proc/$p/stat)" != Z ]; then
      case ",$shards," in *,all,*) hit=1 ;; *) hit= ;; esac
      [ "$mine" = all ] && hit=1
      for s in $(echo "$mine" | tr , ' '); do case ",$shards," in *",$s,"*) hit=1 ;; esac; done
      [ -n "$hit" ] && echo "$$ ($mine) started while $p of $f ($shards) runs" >> "$d/overlaps"
    fi
  done
done
wait
"""


def running(pid):
    """Whether `pid` runs (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def tree(root):
    """Every running descendant of `root` (its children, theirs, ...)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [pid for pid in found if running(pid)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("command", choices=["shards", "schedule"])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--bound", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--distsync", default="target/debug/distsync")
    args = parser.parse_args()

    records = tempfile.mkdtemp(prefix="kill-soak-")
    name = f"kill-soak/{args.command}/{os.getpid()}-{int(time.time())}"
    if args.command == "shards":
        what = ["--ttl", "6s", "shards", name, str(args.shards)]
    else:
        what = ["--ttl", "2s", "schedule", name, "2s"]

    def start():
        env = dict(os.environ, SOAK_DIR=records, SOAK_SHORT="")
        if args.command == "schedule":
            env["SOAK_SHORT"] = "1"
        return subprocess.Popen(
            [args.distsync, "--backend", args.url, *what, "--", "sh", "-c", CMD],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    members = [start() for _ in range(args.members)]
    kills, longest, outlived = 0, 0.0, []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        time.sleep(random.uniform(5, 20))
        victim = random.randrange(len(members))
        held = tree(members[victim].pid)
        killed = time.monotonic()
        members[victim].send_signal(signal.SIGKILL)
        members[victim].wait()
        kills += 1
        while True:
            alive = [pid for pid in held if running(pid)]
            lived = time.monotonic() - killed
            if not alive or lived > 60:
                break
            time.sleep(0.005)
        longest = max(longest, lived)
        if lived > args.bound:
            outlived.append(f"{alive or held} lived {lived:.2f}s after the kill")
        members[victim] = start()
    for member in members:
        member.send_signal(signal.SIGTERM)
    for member in members:
        member.wait()

    runs = len([f for f in os.listdir(records) if f.endswith(".pids")])
    try:
        with open(os.path.join(records, "overlaps")) as found:
            overlaps = found.read().splitlines()
    except FileNotFoundError:
        overlaps = []
    shutil.rmtree(records, ignore_errors=True)
    print(
        f"{args.command} on {args.url.split('://')[0]}: {args.seconds:.0f}s, "
        f"{args.members} members, {kills} kills, {runs} CMD runs, "
        f"{len(overlaps)} overlaps, longest life after a kill {longest * 1000:.0f} ms"
    )
    for line in overlaps[:10] + outlived[:10]:
        print("  " + line)
    return 1 if overlaps or outlived else 0


if __name__ == "__main__":
    sys.exit(main())
