#!/usr/bin/env bash
# Installs every Debian package that building and testing shardq needs.
# Idempotent: quiet and fast when everything is already present.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools
  libboost-dev libboost-context-dev
  nlohmann-json3-dev
  libopenblas-dev liblapacke-dev
  libcli11-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev
  libssl-dev
  clang libclang-rt-14-dev
  python3 python3-h5py python3-numpy
  time curl procps
  # coordinator service tests: a one-node SLURM on localhost (tests/service)
  slurmctld slurmd slurm-client munge
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
