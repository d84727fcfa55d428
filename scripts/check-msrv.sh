#!/usr/bin/env bash
# Checks that the workspace's `rust-version` (the MSRV, in the root Cargo.toml's
# [workspace.package]) is true of Cargo.lock: no locked package may declare a higher
# `rust-version` than ours, or a build with our MSRV would fail in that dependency.
#
# Every package of the lock file counts, whatever the platform or the dependency kind
# (dev-dependencies and the bench's peers included): `cargo test` with the MSRV builds
# them too. Our own code is not measured here (a lint does that: clippy's
# `incompatible_msrv` reads the same `rust-version`).
#
# Exit 0: prints the highest rust-version declared by a dependency and ours.
# Exit 1: lists every dependency above ours, highest first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# --locked: judge the committed Cargo.lock, never a freshly resolved one.
cargo metadata --format-version 1 --locked | python3 -c '
import json
import sys


def parse(version):
    """A rust-version ("1.80" or "1.80.1") as a comparable tuple (missing parts 0)."""
    parts = [int(part) for part in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


metadata = json.load(sys.stdin)
members = set(metadata["workspace_members"])
ours = {
    package["rust_version"]
    for package in metadata["packages"]
    if package["id"] in members and package.get("publish") != []
}
if len(ours) != 1 or None in ours:
    sys.exit(
        "check-msrv: expected one rust-version across the published workspace crates, "
        f"found {sorted(map(str, ours))}"
    )
(msrv,) = ours

dependencies = [
    (package["rust_version"], package["name"], package["version"])
    for package in metadata["packages"]
    if package["id"] not in members and package.get("rust_version")
]
dependencies.sort(key=lambda dependency: (parse(dependency[0]), dependency[1]), reverse=True)
above = [dependency for dependency in dependencies if parse(dependency[0]) > parse(msrv)]
if above:
    print(
        f"check-msrv: the workspace declares rust-version {msrv}, "
        f"but Cargo.lock has {len(above)} package(s) that need more:"
    )
    for rust_version, name, version in above:
        print(f"  {name} {version}: rust-version {rust_version}")
    print(
        "Raise rust-version in the root Cargo.toml (a minor release, see docs/SEMVER.md) "
        "or lock older versions of these packages."
    )
    sys.exit(1)
if dependencies:
    rust_version, name, version = dependencies[0]
    print(
        f"check-msrv: ok: rust-version {msrv}; "
        f"the highest a dependency declares is {rust_version} ({name} {version})"
    )
else:
    print(f"check-msrv: ok: rust-version {msrv}; no dependency declares one")
'
