#!/usr/bin/env bash
# Installs what the harness needs, idempotently, and says what it does:
#  1. the Debian packages (build tools, test and CLI libraries); packages
#     already present are not touched and apt is not consulted when nothing
#     is missing;
#  2. the project's virtual environment .venv/ with the pinned PyTorch from
#     PyPI. CMake takes libtorch from it (torch.utils.cmake_prefix_path) and
#     the test oracles run its python. The Linux x86_64 wheel is the CUDA
#     build (about 5.3 GB with its NVIDIA libraries): it is installed once
#     and reused while .venv holds the pinned version.
# A warm `make test` pays a few dpkg queries and one python start here.
#
# Environment: MOE_TORCH_VERSION (pinned version, default below), MOE_VENV
# (default <repo>/.venv), PYTHON (the interpreter that creates the venv,
# default python3).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
torch_version="${MOE_TORCH_VERSION:-2.15.0}"
# Hugging Face transformers: an independent oracle for tests only (issue 18,
# harness/cli/tests/hf_oracle.py), never a dependency of the C++ harness.
transformers_version="${MOE_TRANSFORMERS_VERSION:-5.25.0}"
venv="${MOE_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"

pkgs=(
  build-essential cmake ninja-build ccache
  nlohmann-json3-dev libgtest-dev libgmock-dev
  libcli11-dev libbenchmark-dev libfmt-dev
  python3-venv  # creates .venv with Debian's python3
  clang libclang-rt-14-dev  # the libFuzzer targets (fuzz/, ASan + UBSan)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing missing packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "ci/setup.sh: not root; install these packages first: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# torch in the virtual environment.
installed=""
if [ -x "$venv/bin/python" ]; then
  installed="$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)"
fi
# transformers (small, pure Python) is checked on every call, so a venv
# made before it was pinned gains it without reinstalling torch.
ensure_transformers() {
  local have
  have="$("$venv/bin/python" -c 'import transformers; print(transformers.__version__)' 2>/dev/null || true)"
  if [ "$have" = "$transformers_version" ]; then
    echo "ci/setup.sh: $venv has transformers $have (pinned: $transformers_version); reusing it"
    return 0
  fi
  echo "ci/setup.sh: installing transformers==$transformers_version into $venv (test oracle only)"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --progress-bar off \
    "transformers==$transformers_version"
}
case "$installed" in
  "$torch_version" | "$torch_version"+*)  # 2.15.0 or 2.15.0+cu132
    echo "ci/setup.sh: $venv has torch $installed (pinned: $torch_version); reusing it"
    ensure_transformers
    exit 0 ;;
esac
if [ ! -x "$venv/bin/python" ]; then
  echo "ci/setup.sh: creating the virtual environment $venv ($("$python" --version 2>&1))"
  "$python" -m venv "$venv"
fi
if [ -n "$installed" ]; then
  echo "ci/setup.sh: $venv has torch $installed; replacing it with torch==$torch_version"
fi
echo "ci/setup.sh: installing torch==$torch_version from PyPI into $venv (the CUDA build, about 5.3 GB; once)"
start=$(date +%s)
"$venv/bin/python" -m pip install --disable-pip-version-check --no-input --progress-bar off \
  "torch==$torch_version"
echo "ci/setup.sh: torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null) installed" \
     "in $(( $(date +%s) - start )) s; $(du -sh "$venv" | cut -f1) in $venv"
ensure_transformers
