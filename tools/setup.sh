# Shared by tools/demo and tools/test (sourced, not run): install what vmic needs.
#   need_debian PKG...   installs missing Debian packages with apt-get (as root), or
#                        says exactly what is missing and stops (as another user)
#   need_venv            creates or refreshes .venv with vmic and its test dependencies
# shellcheck shell=bash

VMIC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$VMIC_ROOT/.venv"

_missing_debian() {
    local pkg missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    echo "${missing[@]:-}"
}

need_debian() {
    local missing
    missing="$(_missing_debian "$@")"
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "vmic: missing Debian packages: $missing" >&2
        echo "vmic: install them as root:  apt-get install -y $missing" >&2
        exit 1
    fi
    echo "vmic: installing Debian packages: $missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >&2
}

need_venv() {
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1 || ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        need_debian python3 python3-venv python3-pip
        python=python3
    fi
    local stamp want
    want="$(cat "$VMIC_ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
    stamp="$VENV/.vmic-installed"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "vmic: creating $VENV" >&2
        "$python" -m venv "$VENV"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        need_debian $VMIC_BUILD_PACKAGES  # libvirt-python is built from source against libvirt
        echo "vmic: installing Python dependencies into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip >&2
        "$VENV/bin/python" -m pip install -q -e "$VMIC_ROOT[test]" >&2
        echo "$want" > "$stamp"
    fi
}

# Debian packages each entry point needs (tests use the real tools, never stand-ins).
VMIC_RUNTIME_PACKAGES="openssl lvm2 qemu-utils qemu-system-x86 ca-certificates"
VMIC_BUILD_PACKAGES="gcc pkg-config python3-dev libvirt-dev"
# the guest with device-mapper that runs the LVM data path (tools/guest.py)
VMIC_GUEST_PACKAGES="linux-image-cloud-amd64 busybox-static cpio thin-provisioning-tools qemu-system-x86 lvm2"
VMIC_TEST_PACKAGES="$VMIC_RUNTIME_PACKAGES $VMIC_GUEST_PACKAGES chromium postgresql iproute2 aria2 transmission-cli libvirt-clients libxml2-utils systemd"
