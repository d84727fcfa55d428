#!/usr/bin/env bash
# What building the whole workspace (every feature, the bench's peers included) needs
# from Debian beside the Rust toolchain, installed when missing: a C compiler (cargo
# links with it; C parts of dependencies), protoc (etcd-client's build script), and
# pkg-config with OpenSSL's headers (the bench peers link OpenSSL through native-tls).
# No server: scripts/servers.sh installs those, and runs this first.
#
#   scripts/build-tools.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
source "$ROOT/scripts/apt-install.sh"

missing=()
# command:package pairs
for pair in cc:gcc protoc:protobuf-compiler pkg-config:pkg-config; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
[[ -e /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
((${#missing[@]})) || exit 0
apt_install "${missing[@]}" || {
    printf 'build-tools: could not install %s\n' "${missing[*]}" >&2
    exit 1
}
