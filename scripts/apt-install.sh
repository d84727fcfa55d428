# Sourced by the scripts that install what they need (build tools, servers, the peers):
# installs Debian packages, the one way (as root, or through sudo).

# apt_install PACKAGE...: installs the packages with apt-get (its package lists
# updated first), waiting up to 5 minutes for another apt to finish. Returns non-zero,
# with a message on stderr, when it cannot.
apt_install() {
    (($#)) || return 0
    local sudo=()
    if ((EUID != 0)); then
        if ! command -v sudo >/dev/null; then
            printf 'missing packages (%s) and not root, no sudo: install them as root\n' "$*" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    printf 'installing %s\n' "$*" >&2
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
    "${apt[@]}" update -qq && "${apt[@]}" install -y -qq "$@" >/dev/null
}
