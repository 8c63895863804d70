#!/usr/bin/env bash
# Runs shardq's GPU checks on a lent GPU machine, from the repo root, with .gpu_bundle/ (made by
# scripts/gpu_bundle.sh) carried along: unpacks the bundled Debian libraries into a private
# prefix (never /), points the loader and Open MPI at it, recreates the absolute paths the ctest
# files name, runs `ctest -L gpu`, then each extra command. Every step has a time limit inside
# one overall budget, so the call ends with its logs even when something hangs.
# Usage: scripts/gpu_device_run.sh [--no-ctest] [-- CMD ARGS... [-- CMD ARGS...]...]
#   A command given as one quoted word is shell text ('bench --benchmark_out=$OUT/b.json').
# Logs:  $OUT/gpu_run.log (everything), $OUT/ctest.log (ctest alone); $OUT defaults to /tmp/shardq_gpu_out.
# Env:   SHARDQ_DEVICE_BUDGET_S (570: all steps together), SHARDQ_CTEST_TIMEOUT_S (420: ctest),
#        SHARDQ_CTEST_ARGS (extra ctest arguments, e.g. "-R Gptq"). The commands see
#        SHARDQ_DEVICE_DEADLINE, the epoch second at which the budget ends.
set -uo pipefail

root=$(pwd -P)
bundle=$root/.gpu_bundle
# Outside the bundle, so a trial run here leaves nothing in the folder that is carried.
prefix=${SHARDQ_DEVICE_PREFIX:-${TMPDIR:-/tmp}/shardq_gpu_prefix}
export OUT=${OUT:-${TMPDIR:-/tmp}/shardq_gpu_out}  # the commands write their results there too
budget=${SHARDQ_DEVICE_BUDGET_S:-570}
ctest_limit=${SHARDQ_CTEST_TIMEOUT_S:-420}
failures=()

fatal() { echo "gpu_device_run: FATAL: $*"; exit 2; }
note() { echo "gpu_device_run: $*"; }
# Runs "$@" under what is left of the budget (at most LIMIT seconds).
timed() {
  local limit=$1 left=$((budget - SECONDS - 10))
  shift
  ((left >= 5)) || { note "no time left in the ${budget}s budget for: $*"; return 124; }
  ((limit > left)) && limit=$left
  timeout -k 10 "$limit" "$@"
}
# Records a step's exit status; 124/137 are timeouts.
record() {
  local name=$1 rc=$2
  case $rc in
    0) note "ok: $name" ;;
    124 | 137) note "TIMEOUT: $name"; failures+=("$name (timeout)") ;;
    *) note "FAILED: $name (exit $rc)"; failures+=("$name (exit $rc)") ;;
  esac
}
section() { echo; echo "===== $* ====="; }

machine_info() {
  section machine
  uname -a
  grep -E '^(PRETTY_NAME|VERSION_ID)=' /etc/os-release
  ldd --version | head -1
  if command -v nvidia-smi >/dev/null; then
    timed 30 nvidia-smi || note "WARNING: nvidia-smi failed"
  else
    note "WARNING: no nvidia-smi: no GPU driver here, the gpu tests will skip"
  fi
  if command -v nvcc >/dev/null; then nvcc --version | tail -2; else note "no nvcc on PATH"; fi
  command -v python3 >/dev/null && python3 --version
  command -v ctest >/dev/null && ctest --version | head -1
}

# dpkg -x, or the same with python where dpkg is missing (a .deb is an ar archive of tars).
unpack_deb() {
  if command -v dpkg >/dev/null; then
    dpkg -x "$1" "$2"
  else
    python3 - "$1" "$2" <<'EOF'
import io, sys, tarfile
deb, dest = sys.argv[1:]
with open(deb, "rb") as f:
    assert f.read(8) == b"!<arch>\n", deb + " is not a .deb"
    while len(hdr := f.read(60)) == 60:
        name, size = hdr[:16].decode().strip().rstrip("/"), int(hdr[48:58])
        data = f.read(size + size % 2)[:size]
        if name.startswith("data.tar"):
            trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
            tarfile.open(fileobj=io.BytesIO(data)).extractall(dest, **trusted)
EOF
  fi
}

# (grep reads a process substitution: `ldconfig -p | grep -q` fails under pipefail with
# SIGPIPE once the cache listing outgrows the pipe buffer and grep exits early)
system_has() { grep -q "^[[:space:]]$1 (.*x86-64" < <(/sbin/ldconfig -p 2>/dev/null); }

# Directories that may hold the CUDA toolkit's and NCCL's libraries on the device.
cuda_dirs() {
  local d sp
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $d ]] && echo "$d"
  done
  command -v python3 >/dev/null || return 0
  for sp in $(python3 -c 'import site; print(*site.getsitepackages(), site.getusersitepackages())' 2>/dev/null); do
    for d in "$sp"/nvidia/*/lib; do [[ -d $d ]] && echo "$d"; done
  done
}

setup_libraries() {
  section libraries
  case $(realpath -m "$prefix") in
    / | "$root" | "$root"/* | "$HOME" | /usr | /usr/* | /tmp) fatal "SHARDQ_DEVICE_PREFIX=$prefix: not a private folder to unpack into" ;;
  esac
  rm -rf "$prefix"
  mkdir -p "$prefix/.sonames" "$prefix/.bin"
  local deb n=0
  for deb in "$bundle"/debs/*.deb; do
    unpack_deb "$deb" "$prefix" || fatal "could not unpack $deb"
    n=$((n + 1))
  done
  ((n > 0)) || fatal "no .debs in $bundle/debs: run scripts/gpu_bundle.sh and carry .gpu_bundle"
  note "unpacked $n packages into $prefix"

  # One directory of soname links on LD_LIBRARY_PATH: it also stands in for the Debian
  # alternatives (libblas.so.3, liblapack.so.3, ...) that dpkg -x does not set up.
  local class name rel pkg d found missing=() extra_dirs=() from_system=()
  local dirs
  dirs=$(cuda_dirs)
  while read -r class name rel pkg; do
    case $class in
      base)
        if system_has "$name"; then from_system+=("$name"); continue; fi ;&
      own)
        [[ -e $prefix/$rel ]] || fatal "$name: $rel is not in the unpacked packages ($pkg)"
        ln -sfn "$prefix/$rel" "$prefix/.sonames/$name" ;;
      cuda)
        system_has "$name" && continue
        found=
        for d in $dirs; do
          [[ -f $d/$name ]] && { found=$d; break; }
        done
        [[ -n $found ]] || { missing+=("$name"); continue; }
        # Linked too: a later directory's copy must not shadow the one chosen here.
        ln -sfn "$found/$name" "$prefix/.sonames/$name"
        [[ " ${extra_dirs[*]} " == *" $found "* ]] || extra_dirs+=("$found")
        note "$name from $found" ;;
    esac
  done <"$bundle/libs.txt"
  ((${#missing[@]} == 0)) ||
    fatal "CUDA/NCCL libraries not found on this machine: ${missing[*]} (looked in ldconfig and: $(tr '\n' ' ' <<<"$dirs"))"
  ((${#from_system[@]} == 0)) || note "base libraries the machine has itself: ${from_system[*]}"

  local ld_path=$prefix/.sonames
  for d in "${extra_dirs[@]}"; do ld_path+=:$d; done
  # PyTorch must load its own CUDA libraries, not the toolkit's linked here: its steps run
  # with the machine's own search path.
  export SHARDQ_SYSTEM_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
  export LD_LIBRARY_PATH=$ld_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  note "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

  # Open MPI relocated: Debian's paths are relative to its prefix /usr except sysconfdir.
  [[ -x $prefix/usr/bin/orterun ]] || fatal "no Open MPI launcher (usr/bin/orterun) in the bundle's packages"
  local tool
  for tool in orterun orted ompi_info; do
    [[ -e $prefix/usr/bin/$tool ]] && ln -sfn "$prefix/usr/bin/$tool" "$prefix/.bin/$tool"
  done
  ln -sfn "$prefix/usr/bin/orterun" "$prefix/.bin/mpirun"
  ln -sfn "$prefix/usr/bin/orterun" "$prefix/.bin/mpiexec"
  export PATH=$prefix/.bin:$PATH
  export OPAL_PREFIX=$prefix/usr OPAL_SYSCONFDIR=$prefix/etc/openmpi
  # Debian's PMIx has its own prefix with absolute paths compiled in: relocate each one.
  local pmix=$prefix/usr/lib/x86_64-linux-gnu/pmix2
  [[ -d $pmix ]] || fatal "no PMIx (usr/lib/x86_64-linux-gnu/pmix2) in the bundle's packages"
  export PMIX_PREFIX=$pmix PMIX_EXEC_PREFIX=$pmix PMIX_LIBDIR=$pmix/lib PMIX_PKGLIBDIR=$pmix/lib/pmix \
    PMIX_DATAROOTDIR=$pmix/share PMIX_DATADIR=$pmix/share PMIX_PKGDATADIR=$pmix/share/pmix PMIX_SYSCONFDIR=$pmix/share \
    PMIX_MCA_mca_base_component_path=$pmix/lib/pmix  # pmix-mca-params.conf names /usr/lib/...
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  # Single-copy (CMA) needs ptrace rights that VMs and containers often refuse.
  export OMPI_MCA_btl_vader_single_copy_mechanism=none
  # Without ssh/rsh the rsh launcher refuses to start even for local ranks.
  local agent=0 path_dirs
  IFS=: read -ra path_dirs <<<"$PATH"
  for d in "${path_dirs[@]}"; do
    [[ -f $d/ssh && -x $d/ssh || -f $d/rsh && -x $d/rsh ]] && agent=1
  done
  ((agent)) || export OMPI_MCA_plm=isolated
}

# Recreates the absolute paths of the machine that built the bundle (ctest files, test env).
setup_paths() {
  section paths
  if [[ $(realpath -m "$SRC_DIR") != "$root" ]]; then
    if [[ -L $SRC_DIR || ! -e $SRC_DIR ]]; then
      mkdir -p "$(dirname "$SRC_DIR")" && ln -sfn "$root" "$SRC_DIR" || fatal "cannot link $SRC_DIR -> $root"
      note "$SRC_DIR -> $root"
    else
      fatal "$SRC_DIR exists and is not this checkout ($root), but the ctest files name it"
    fi
  fi
  mkdir -p "$BUILD_DIR" && tar -xzf "$bundle/build.tar.gz" -C "$BUILD_DIR" ||
    fatal "cannot unpack the build files into $BUILD_DIR"
  note "build files in $BUILD_DIR ($(realpath "$BUILD_DIR"))"
  # SHARED_DIR is <src>/../shared: with <src> a link, '..' is the parent of this checkout.
  local shared f have=1
  shared=$(realpath -m "$SHARED_DIR")
  [[ -f $bundle/shared.list && -f $bundle/shared.tar.gz ]] ||
    fatal "the bundle has no shared test data (shared.list, shared.tar.gz): rebuild it with scripts/gpu_bundle.sh"
  while read -r f; do [[ -f $shared/$f ]] || { have=0; break; }; done <"$bundle/shared.list"
  if ((have)); then
    note "shared data already at $shared"
  else
    mkdir -p "$shared" && tar -xzf "$bundle/shared.tar.gz" -C "$shared" ||
      fatal "cannot unpack the shared test data into $shared"
    note "shared data unpacked into $shared"
  fi
  export SHARDQ_SHARED=$SHARED_DIR SHARDQ_BIN=$BUILD_DIR/apps/shardq/shardq SHARDQ_SOURCE=$SRC_DIR
  # Script tests read checkpoints with numpy + h5py: PyTorch's python3 there, Debian's here.
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import numpy, h5py' 2>/dev/null; then
      SHARDQ_PYTHON=$(command -v "$py")
      export SHARDQ_PYTHON
      break
    fi
  done
  note "SHARDQ_PYTHON=${SHARDQ_PYTHON:-none: no python3 with numpy and h5py, tests that read checkpoints will fail}"
}

# Every library of the binaries, the unpacked packages and Open MPI's plugins must resolve.
check_libraries() {
  section "library resolution"
  local elf bin report rc symbols missing unresolved=() bad_symbols=0
  for bin in $BINARIES; do
    report=$(ldd "$BUILD_DIR/$bin" 2>&1)
    rc=$?
    echo "--- $bin"
    sed -n 's/^[[:space:]]*\(\S*\) => \(\S*\).*/  \1 => \2/p' <<<"$report" | sed "s|$prefix/|<bundle>/|"
    grep -q "version .* not found" <<<"$report" &&
      fatal "$bin needs a newer glibc/libstdc++ than this machine's (built with $NEEDS_GLIBC, $NEEDS_GLIBCXX)"
    missing=$(awk '/=> not found/{printf "%s ", $1}' <<<"$report")
    [[ -z $missing ]] || unresolved+=("$bin: $missing")
    ((rc == 0)) || fatal "$bin cannot be loaded: $(grep -v '=>' <<<"$report" | head -1)"
    # Symbols a library lacks (an older NCCL than the headers, say) fail only when first called.
    symbols=$(ldd -r "$BUILD_DIR/$bin" 2>&1 | grep "undefined symbol")
    [[ -z $symbols ]] || { sed 's/^/  ERROR: /' <<<"$symbols"; bad_symbols=1; }
  done
  while read -r elf; do
    missing=$(ldd "$elf" 2>/dev/null | awk '/=> not found/{printf "%s ", $1}')
    [[ -z $missing ]] || unresolved+=("$(basename "$elf"): $missing")
  done < <(find "$prefix/.sonames" "$prefix/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3" \
             "$prefix/usr/bin/orterun" -name '*.so*' -o -name orterun 2>/dev/null)
  ((${#unresolved[@]} == 0)) || fatal "unresolved libraries: ${unresolved[*]}"
  ((bad_symbols == 0)) || failures+=("undefined symbols (see ERROR lines above)")
  note "every library resolves"
}

run_ctest() {
  section "ctest -L gpu"
  local rc
  if command -v ctest >/dev/null; then
    (cd "$BUILD_DIR" && timed "$ctest_limit" ctest -L gpu --no-tests=error --output-on-failure --timeout 300 \
       ${SHARDQ_CTEST_ARGS:-}) 2>&1 | tee "$OUT/ctest.log"
    rc=${PIPESTATUS[0]}
  else
    note "no ctest on PATH: running the gpu test binary itself"
    (cd "$BUILD_DIR/tests" && timed "$ctest_limit" ./shardq_gpu_tests) 2>&1 | tee "$OUT/ctest.log"
    rc=${PIPESTATUS[0]}
  fi
  record "ctest -L gpu" "$rc"
}

main() {
  local run_ctest=1 cmds=() current=() cmd
  while (($#)); do
    case $1 in
      --no-ctest) run_ctest=0; shift ;;
      --) break ;;
      -h | --help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; return 0 ;;
      *) fatal "unknown option '$1' (extra commands go after --)" ;;
    esac
  done
  # Commands are separated by --; one quoted word is shell text, several are argv.
  while (($#)); do
    shift
    current=()
    while (($#)) && [[ $1 != -- ]]; do current+=("$1"); shift; done
    ((${#current[@]} == 0)) && continue
    if ((${#current[@]} == 1)); then cmds+=("${current[0]}"); else cmd=$(printf '%q ' "${current[@]}"); cmds+=("${cmd% }"); fi
  done

  [[ -f $bundle/bundle.env ]] || fatal "no $bundle/bundle.env: run scripts/gpu_bundle.sh here and carry .gpu_bundle"
  local tool
  for tool in timeout tar gzip ldd realpath; do command -v $tool >/dev/null || fatal "'$tool' is not on PATH"; done
  # shellcheck source=/dev/null
  source "$bundle/bundle.env"
  note "bundle of $GIT_COMMIT ($GIT_DIRTY_FILES files changed) built $BUILT_AT on $BUILT_ON;" \
       "needs $NEEDS_GLIBC, $NEEDS_GLIBCXX; NCCL headers $NCCL_HEADER"
  [[ -f $bundle/tree.sha256 ]] || fatal "no $bundle/tree.sha256: rebuild the bundle with scripts/gpu_bundle.sh"
  (cd "$root" && sha256sum --quiet -c "$bundle/tree.sha256") ||
    note "WARNING: the working tree differs from the one the bundle was built from (files above)"

  machine_info
  setup_libraries
  setup_paths
  check_libraries

  section "mpirun -np 2 hostname"
  timed 60 mpirun -np 2 hostname
  record "mpirun -np 2 hostname" $?

  ((run_ctest)) && run_ctest
  # When this call's budget ends (epoch seconds), for commands that plan their own steps.
  export SHARDQ_DEVICE_DEADLINE=$(($(date +%s) + budget - SECONDS))
  for cmd in "${cmds[@]}"; do
    section "$cmd"
    (cd "$root" && timed 600 bash -c "$cmd")
    record "$cmd" $?
  done

  section summary
  if ((${#failures[@]})); then
    note "FAILED: ${failures[*]}"
    return 1
  fi
  note "all steps passed (${SECONDS}s)"
}

mkdir -p "$OUT" || { echo "gpu_device_run: FATAL: cannot create OUT=$OUT"; exit 2; }
main "$@" 2>&1 | tee "$OUT/gpu_run.log"
exit "${PIPESTATUS[0]}"
