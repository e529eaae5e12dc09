#!/usr/bin/env bash
# Installs what the build and tests need when it is missing. Sourced by ./planner and ./test.
# Debian packages are installed with apt-get when running as root; otherwise the exact command is printed and
# the caller exits 2.
set -euo pipefail

# Debian packages the planner needs: COIN-OR CBC for the stage-partition MILP (loaded through its C API) and
# gnuplot for what-if plots.
PLANNER_APT_PACKAGES=(coinor-libcbc-dev gnuplot-nox)
# The executor's libtorch shim: Debian's libtorch 1.13 with Gloo, OpenBLAS (else torch links the slow reference
# BLAS), the compiler and CMake; python3-torch only for the binding's parity tests;
# iproute2 (ip, tc) for the tests that emulate two machines in network namespaces (scripts/hosts.sh).
EXECUTOR_APT_PACKAGES=(libtorch-dev libgloo-dev libopenblas0-pthread libjemalloc2 cmake g++ make python3-torch iproute2)

planner_need_dotnet() {
  if ! command -v dotnet >/dev/null 2>&1; then
    echo "planner: the .NET 10 SDK is required (dotnet not found on PATH); install it, e.g. 'apt-get install dotnet-sdk-10.0' from Microsoft's Debian feed" >&2
    exit 2
  fi
  local major
  major=$(dotnet --version 2>/dev/null | cut -d. -f1)
  if [ "${major:-0}" -lt 10 ]; then
    echo "planner: the .NET 10 SDK is required (found $(dotnet --version))" >&2
    exit 2
  fi
}

planner_need_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "planner: missing Debian packages; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
  echo "planner: installing ${missing[*]}" >&2
  apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# Builds src/Executor/native (CMake) when the library is missing or older than a source file.
# The shim is taken as built only with its stamp, removed before a build and written after a complete one: a build
# killed while linking leaves a library but no stamp, and is built again.
planner_build_shim() {
  local root="$1" dir="$1/src/Executor/native" lib="$1/src/Executor/native/build/libplanner_torch.so"
  local stamp="$dir/build/.stamp"
  if [ -f "$lib" ] && [ -f "$stamp" ] && [ -z "$(find "$dir" -maxdepth 1 \( -name '*.cpp' -o -name '*.h' -o -name CMakeLists.txt \) -newer "$stamp" -print -quit)" ]; then
    return 0
  fi
  echo "planner: building the libtorch shim (CMake)..." >&2
  rm -f "$stamp"
  if ! { cmake -S "$dir" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release >"$dir/build.log" 2>&1 &&
         cmake --build "$dir/build" -j "$(nproc)" >>"$dir/build.log" 2>&1; }; then
    cat "$dir/build.log" >&2
    echo "planner: the libtorch shim failed to build (log above, also in src/Executor/native/build.log)" >&2
    return 1
  fi
  touch "$stamp"
}

# What the planning verbs need: .NET and the solver's and plots' packages.
planner_setup_planning() {
  planner_need_dotnet
  planner_need_apt "${PLANNER_APT_PACKAGES[@]}"
  export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
}

# What the executor needs besides: libtorch, Gloo and the tools to build the shim, and the shim.
planner_setup_executor() {
  planner_need_apt "${EXECUTOR_APT_PACKAGES[@]}"
  planner_build_shim "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
}

# Everything (./test).
planner_setup() {
  planner_setup_planning
  planner_setup_executor
}
