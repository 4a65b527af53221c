#!/usr/bin/env bash
# Installs everything Tessera needs on a fresh Debian machine with Node 20 and npm:
# the system libraries the `gl` native build and the browser tests need (when run as root or with sudo),
# pnpm 12, and the workspace's packages (building `gl`). Safe to run again.
# SETUP_REQUIRE_GL=1 makes a missing native gl build an error (CI); otherwise it is a warning,
# and headless-gl tests are skipped with a printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

apt_pkgs=(libxi-dev libglu1-mesa-dev libglew-dev mesa-common-dev pkg-config libgl1-mesa-dri xvfb xauth chromium)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
      echo "setup: cannot install ${missing[*]} (not root, no sudo); gl/browser tests will be skipped" >&2
      missing=()
    fi
  fi
  if ((${#missing[@]})); then
    echo "setup: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PNPM_VERSION=12.21.0
if [ "$(pnpm --version 2>/dev/null || true)" != "$PNPM_VERSION" ]; then
  echo "setup: installing pnpm $PNPM_VERSION"
  npm install -g --loglevel=error "pnpm@$PNPM_VERSION"
fi

# gl (optional dependency of gpu.js) builds with node-gyp: Node's headers from /usr/include/node, parallel make.
export npm_config_nodedir=/usr JOBS=max
echo "setup: pnpm install (a first install builds the native gl module: about 2-3 minutes)"
if [ -n "${CI:-}" ]; then pnpm install --frozen-lockfile --reporter=append-only >/dev/null
else pnpm install --reporter=append-only >/dev/null; fi

if ! compgen -G 'node_modules/.pnpm/gl@*/node_modules/gl/build/Release/webgl.node' >/dev/null; then
  msg="native gl build missing (node_modules/.pnpm/gl@*/node_modules/gl/build/Release/webgl.node)"
  if [ -n "${SETUP_REQUIRE_GL:-}" ]; then echo "setup: $msg" >&2; exit 1; fi
  echo "setup: warning: $msg; the headlessgl backend will be unavailable" >&2
fi
pnpm run build >/dev/null
echo "setup: done"
