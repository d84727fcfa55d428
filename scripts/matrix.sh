#!/usr/bin/env bash
# The guarantee matrix of the in-process memory backend, in markdown: no server, no
# install. Extra arguments go to the runner (e.g. --format json, --case lock, --list).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo run -q -p distsync-conformance -- --backend memory:// "$@"
