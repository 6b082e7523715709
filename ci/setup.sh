#!/usr/bin/env bash
# Installs the Debian packages the harness needs, idempotently: packages already
# present are not touched and apt is not even consulted when nothing is missing,
# so a warm `make test` pays nothing here.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build ccache
  libtorch-dev libgloo-dev nlohmann-json3-dev libgtest-dev libgmock-dev
  libcli11-dev libbenchmark-dev libfmt-dev
  python3-torch  # test-only oracle, never a runtime dependency
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
echo "ci/setup.sh: installing missing packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "ci/setup.sh: not root; install these packages first: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
