#!/usr/bin/env bash
# Checks that every published crate can be published: packages each one as crates.io
# would receive it (metadata, readme, licenses, no file from outside the crate) and
# builds each package on its own against the others' packages, in dependency order
# (`cargo publish --workspace`, which leaves out distsync-bench, `publish = false`).
# Nothing is uploaded (`--dry-run`).
#
#   scripts/check-package.sh               # package and build each crate (~6 min cold, 2 cores)
#   scripts/check-package.sh --no-verify   # package only, no builds (~10 s)
#
# Then (not with --no-verify) `cargo install` of the conformance runner from its crate
# into a temporary root, as a user installs it, with the workspace's target directory
# (CARGO_TARGET_DIR if set) so nothing is built twice; the installed binary must answer
# `--help` and pass a safe run of two cases against memory:// that leaves nothing behind.
#
# - `--allow-dirty`: packages the working tree as it is, so the check runs before a
#   commit and in CI checkouts where the build leaves untracked files; a real publish
#   runs from a clean tag without it.
# - `--locked`: builds with the committed Cargo.lock, as CI does everywhere else.
# - The backend crates and the CLI ship without tests/ (their tests need the
#   workspace's conformance crate and test servers): the warnings "ignoring test ... is
#   not included in the published package" are expected.
# - distsync-etcd builds etcd's protos in etcd-client's build script: `protoc` must be
#   on the PATH (Debian: protobuf-compiler).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v protoc >/dev/null 2>&1 && [ -z "${PROTOC:-}" ]; then
    echo "check-package: protoc not found (Debian: apt-get install protobuf-compiler);" \
        "distsync-etcd needs it to build" >&2
    exit 2
fi

# `cargo publish --workspace` verifies each crate against the others' packages through a
# temporary local registry under target/package, and cargo extracts a registry crate only
# once per registry path: a machine that packaged an earlier commit from the same
# checkout path would build against that commit's sources. The extracted and cached
# copies of this workspace's crates from local registries (the `-<hash>` directories;
# crates.io's own is `index.crates.io-*`) go before each run.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
crates=$(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"]))')
for crate in $crates; do
    rm -rf "$cargo_home"/registry/src/-*/"$crate"-[0-9]* "$cargo_home"/registry/cache/-*/"$crate"-[0-9]*.crate
done

start=$SECONDS
cargo publish --workspace --dry-run --allow-dirty --locked "$@"
echo "check-package: every published crate packages and builds ($((SECONDS - start))s)" >&2

case " $* " in
*" --no-verify "*) exit 0 ;;
esac
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
start=$SECONDS
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target} \
    cargo install --path conformance --root "$root" --locked --quiet
"$root/bin/distsync-conformance" --help >/dev/null
"$root/bin/distsync-conformance" --backend memory:// --profile safe \
    --case lock_mutual_exclusion --case queue_fifo >"$root/matrix.md" 2>"$root/stderr" || {
    cat "$root/stderr" >&2
    echo "check-package: the installed distsync-conformance failed its safe run" >&2
    exit 1
}
grep -q "entries removed, 0 left" "$root/matrix.md"
echo "check-package: cargo install of distsync-conformance works ($((SECONDS - start))s)" >&2
