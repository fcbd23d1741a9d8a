#!/usr/bin/env bash
# Installs the Debian 12 packages sluice needs to build, test and run, skipping
# what is already installed. Idempotent; safe to run on every `make`.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git clang clang-format libclang-rt-14-dev lld
  libcurl4-openssl-dev libsimdjson-dev libfmt-dev libspdlog-dev libcli11-dev
  libtomlplusplus-dev libsqlite3-dev libpq-dev libxxhash-dev libmicrohttpd-dev
  libgumbo-dev libpoppler-cpp-dev libzip-dev libpugixml-dev libjemalloc-dev
  libgtest-dev libgmock-dev libbenchmark-dev prometheus-cpp-dev libcpp-httplib-dev libhiredis-dev
  pybind11-dev python3-pybind11 python3-dev
  postgresql redis-server nodejs npm sqlite3 python3 poppler-utils zip prometheus chromium
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Node.js may come from outside Debian on some machines; accept any node+npm on PATH.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs/}")
  missing=("${missing[@]/npm/}")
fi
read -r -a missing <<<"${missing[*]}"
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "sluice: missing Debian packages: ${missing[*]}" >&2
  echo "sluice: run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "sluice: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
