#!/usr/bin/env bash
# Builds a Release CUDA + NCCL shardq here and packs .gpu_bundle/ for a lent GPU machine that has
# the CUDA toolkit and NCCL (a Python wheel) but none of the Debian libraries shardq links: the
# binaries with the ctest files `ctest -L gpu` reads, the .debs of every library they (and
# mpirun with its plugins) need beyond glibc/libstdc++/CUDA, and the shared test data the GPU
# tests read. scripts/gpu_device_run.sh unpacks and runs it there (README: "GPU checks on a lent
# machine").
# Usage: scripts/gpu_bundle.sh [BUILD_DIR]        (default <repo>/build-bundle)
# Env:   SHARDQ_BUNDLE_JOBS (build jobs, 2), SHARDQ_BUNDLE_SHARED (paths under the shared dir
#        to pack, default what the gpu tests read: "models/stories260K data/tinystories";
#        "models data" packs all of it, about 7 MiB more).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(realpath -m "${1:-$src/build-bundle}")
bundle=$src/.gpu_bundle
targets=(shardq shardq_gpu_tests bench_gpu_gptq bench_gpu_attention bench_gpu_matmul)
# Where each target lands in the build tree (relative to it).
binaries=(apps/shardq/shardq tests/shardq_gpu_tests bench/bench_gpu_gptq bench/bench_gpu_attention bench/bench_gpu_matmul)
read -ra shared_paths <<<"${SHARDQ_BUNDLE_SHARED:-models/stories260K data/tinystories}"

die() { echo "gpu_bundle: ERROR: $*" >&2; exit 1; }
say() { echo "gpu_bundle: $*"; }
for tool in cmake dpkg dpkg-query apt-get readelf objdump ldd tar gzip; do
  command -v "$tool" >/dev/null || die "'$tool' is not on PATH"
done

# ---- build -------------------------------------------------------------------------------
generator=()
[[ ! -f $build/CMakeCache.txt ]] && command -v ninja >/dev/null && generator=(-G Ninja)
mkdir -p "$build"
cmake -S "$src" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DSHARDQ_CUDA=ON -DSHARDQ_NCCL=ON -DSHARDQ_TESTS=ON -DSHARDQ_BENCH=ON >"$build/configure.log" 2>&1 ||
  { tail -20 "$build/configure.log"; die "configure failed (log: $build/configure.log)"; }
cmake --build "$build" -j"${SHARDQ_BUNDLE_JOBS:-2}" --target "${targets[@]}"

cache() { sed -n "s|^$1:[A-Z]*=||p" "$build/CMakeCache.txt"; }
src_dir=$(cache CMAKE_HOME_DIRECTORY)
shared_dir=$(cache SHARDQ_SHARED_DIR)
[[ $(cache CMAKE_BUILD_TYPE) == Release ]] || die "$build is not a Release build"
for bin in "${binaries[@]}"; do
  [[ -x $build/$bin ]] || die "missing $build/$bin after the build"
  # The device's NCCL is the Python wheel's libnccl.so.2: any other soname would not resolve.
  nccl=$(readelf -d "$build/$bin" | sed -n 's/.*NEEDED.*\[\(libnccl[^]]*\)\].*/\1/p')
  [[ -z $nccl || $nccl == libnccl.so.2 ]] || die "$bin needs $nccl, the device has libnccl.so.2"
done
gpu_tests_file=$(ls "$build"/tests/shardq_gpu_tests*_tests.cmake 2>/dev/null | head -1)
[[ -n $gpu_tests_file ]] || die "no shardq_gpu_tests*_tests.cmake: gtest_discover_tests did not run"

rm -rf "$bundle"
mkdir -p "$bundle/debs"
echo '*' >"$bundle/.gitignore"

# ---- build files: binaries and the ctest files (absolute paths of this machine inside) ----
(cd "$build" && find . \( -name CTestTestfile.cmake -o -name '*_include.cmake' -o -name '*_tests.cmake' \) \
   -printf '%P\n'; printf '%s\n' "${binaries[@]}") | sort -u >"$bundle/build.list"
tar -czf "$bundle/build.tar.gz" -C "$build" -T "$bundle/build.list"

# ---- shared test data ----------------------------------------------------------------------
shared_real=$(realpath "$shared_dir")
for p in "${shared_paths[@]}"; do
  [[ -e $shared_real/$p ]] || die "shared data $shared_real/$p not found"
done
tar -czf "$bundle/shared.tar.gz" -C "$shared_real" "${shared_paths[@]}"
tar -tzf "$bundle/shared.tar.gz" | grep -v '/$' >"$bundle/shared.list"

# ---- libraries -----------------------------------------------------------------------------
# Closure over packages: the ELF files of every package we ship are scanned too, so mpirun's
# plugins (Open MPI, PMIx, UCX, libfabric) bring their own dependencies along.
# Never shipped: glibc, the C++ runtime and everything CUDA (the device has its own).
declare -A pkg_of_file=() pkg_done=() lib_class=() lib_path=()
excluded_pkgs=" libc6 libstdc++6 libgcc-s1 "
is_cuda() { [[ $1 == /usr/local/cuda* || $(basename "$1") == libcuda.so* || $(basename "$1") == libnvidia-* ]]; }
# "PACKAGE PATH" of a file, PATH as the package ships it: with merged /usr a file reached as
# /usr/lib/x may be /lib/x in its .deb (and dpkg -x makes a real lib/ there).
owner() {
  local f=$1 alt line
  alt=${f#/usr}
  [[ $alt == "$f" ]] && alt=/usr$f
  line=$(dpkg -S "$f" 2>/dev/null) || { line=$(dpkg -S "$alt" 2>/dev/null) && f=$alt; } || return 1
  line=$(grep -v '^diversion' <<<"$line" | head -1)
  echo "$(echo "${line%%: *}" | cut -d: -f1) $f"
}
# Seeds: our binaries, and Open MPI's launcher (mpirun) with its help files.
pending_elfs=("${binaries[@]/#/$build/}")
pending_pkgs=(openmpi-bin openmpi-common)
pkg_done=([openmpi-bin]=1 [openmpi-common]=1)
while ((${#pending_elfs[@]})); do
  for elf in "${pending_elfs[@]}"; do
    while read -r name arrow path _; do
      [[ $arrow == "=>" ]] || continue
      if [[ $path == not ]]; then
        [[ $elf == "$build"/* ]] && die "$elf: $name does not resolve here"
        say "WARNING: $elf: $name does not resolve here either"
        continue
      fi
      real=$(realpath "$path")
      if is_cuda "$real"; then
        lib_class[$name]=cuda
        continue
      fi
      [[ -n ${lib_class[$name]:-} ]] && continue
      if [[ -z ${pkg_of_file[$real]:-} ]]; then
        pkg_of_file[$real]=$(owner "$real") || die "$real ($name, needed by $elf) belongs to no package"
      fi
      read -r pkg shipped <<<"${pkg_of_file[$real]}"
      [[ $excluded_pkgs == *" $pkg "* ]] && continue
      lib_class[$name]=$pkg
      lib_path[$name]=${shipped#/}
      [[ -z ${pkg_done[$pkg]:-} ]] && { pkg_done[$pkg]=1; pending_pkgs+=("$pkg"); }
    done < <(ldd "$elf")
  done
  pending_elfs=()
  for pkg in "${pending_pkgs[@]}"; do
    while read -r f; do
      [[ -f $f && ! -L $f && $(head -c4 "$f" | od -An -c | tr -d ' ') == 177ELF ]] && pending_elfs+=("$f")
    done < <(dpkg -L "$pkg")
  done
  pending_pkgs=()
done

# Libraries of every Debian/Ubuntu base system are "base": the device uses its own (newer, so
# compatible) copy when it has the soname, ours otherwise. The rest ("own": Open MPI and its
# plugins' stack, HDF5, OpenBLAS, ...) always comes from the bundle, so it is what ran here.
base_pkgs=" zlib1g libzstd1 liblzma5 libbz2-1.0 liblz4-1 libuuid1 libudev1 libsystemd0 libcap2 libcrypt1
  libselinux1 libpcre2-8-0 libgcrypt20 libgpg-error0 libssl3 libgnutls30 libnettle8 libhogweed6 libgmp10
  libtasn1-6 libp11-kit0 libffi8 libidn2-0 libunistring2 libcom-err2 libkeyutils1 "
: >"$bundle/libs.txt"
for name in $(printf '%s\n' "${!lib_class[@]}" | sort); do
  pkg=${lib_class[$name]}
  if [[ $pkg == cuda ]]; then
    echo "cuda $name -" >>"$bundle/libs.txt"
    continue
  fi
  class=own
  [[ $base_pkgs == *[[:space:]]"$pkg"[[:space:]]* ]] && class=base
  echo "$class $name ${lib_path[$name]} $pkg" >>"$bundle/libs.txt"
done

pkgs=$(printf '%s\n' "${!pkg_done[@]}" | sort)
say "downloading $(wc -w <<<"$pkgs") packages"
download() {
  (cd "$bundle/debs" && apt-get download "$@" >/dev/null 2>&1)
}
updated=0
for pkg in $pkgs; do
  version=$(dpkg-query -W -f='${Version}' "$pkg")
  # The installed version first; a superseded one has left the mirror: then the candidate
  # (a point release of the same Debian release).
  download "$pkg=$version" && continue
  ((updated)) || { apt-get update >/dev/null 2>&1 || say "WARNING: apt-get update failed"; updated=1; }
  download "$pkg=$version" && continue
  download "$pkg" || die "apt-get download $pkg failed"
  say "note: $pkg $version is no longer on the mirror, shipping $(ls "$bundle"/debs/"$pkg"_*.deb | sed 's/.*_\(.*\)_.*/\1/')"
done

# ---- what the device script needs to know -------------------------------------------------
{
  printf 'SRC_DIR=%q\n' "$src_dir"
  printf 'BUILD_DIR=%q\n' "$build"
  printf 'SHARED_DIR=%q\n' "$shared_dir"
  printf 'BINARIES=%q\n' "${binaries[*]}"
  printf 'GIT_COMMIT=%q\n' "$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf 'GIT_DIRTY_FILES=%q\n' "$(git -C "$src" status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
  printf 'BUILT_AT=%q\n' "$(date -u +%FT%TZ)"
  printf 'BUILT_ON=%q\n' "$(. /etc/os-release && echo "$PRETTY_NAME")"
  printf 'NEEDS_GLIBC=%q\n' "$(objdump -T "${binaries[@]/#/$build/}" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)"
  printf 'NEEDS_GLIBCXX=%q\n' "$(objdump -T "${binaries[@]/#/$build/}" | grep -o 'GLIBCXX_[0-9.]*' | sort -Vu | tail -1)"
  printf 'NCCL_HEADER=%q\n' "$(awk '/define NCCL_(MAJOR|MINOR|PATCH) /{v=v (v?".":"") $3} END{print v}' "$(cache NCCL_INCLUDE_DIR)/nccl.h")"
} >"$bundle/bundle.env"
# The tree the binaries were built from: the device run checks that the scripts it runs
# (job_parity.sh, gpu_issue10.sh, ...) are the ones this bundle goes with.
(cd "$src" && git ls-files -z --cached --others --exclude-standard | xargs -0 sha256sum) >"$bundle/tree.sha256"

# ---- sizes ---------------------------------------------------------------------------------
bundle_kib=$(du -sk "$bundle" | cut -f1)
tree_kib=$( (cd "$src" && git ls-files -z --cached --others --exclude-standard 2>/dev/null) |
  du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1 || true)
say "bundle $bundle: $((bundle_kib / 1024)) MiB (debs $(du -sk "$bundle/debs" | cut -f1) KiB," \
    "build $(du -k "$bundle/build.tar.gz" | cut -f1) KiB, shared $(du -k "$bundle/shared.tar.gz" | cut -f1) KiB)"
say "working tree that travels: $((tree_kib / 1024)) MiB; with the bundle $(((tree_kib + bundle_kib) / 1024)) MiB of 64"
say "libraries: $(grep -c '^own ' "$bundle/libs.txt") shipped, $(grep -c '^base ' "$bundle/libs.txt") base (device copy first)," \
    "$(grep -c '^cuda ' "$bundle/libs.txt") from the device's CUDA/NCCL"
((bundle_kib < 45 * 1024)) || die "the bundle is over 45 MiB"
