#!/usr/bin/env bash
# The robot's CPU in the test suite: run the package on aarch64 (the Jetson's CPU) under QEMU
# user-mode emulation and compare it with this x86_64 machine.
#
#   tests/platform/aarch64.sh            # one command; run as root from anywhere
#
# Steps: build (first run, ~4-8 min) or reuse an arm64 Debian bookworm root (debootstrap +
# qemu-user-static through binfmt_misc), `pip install .` the working tree there (aarch64 wheels,
# the Cython kernel compiled under emulation, runtime dependencies pinned to the versions
# installed here), run the memory, face, model and runtime tests there, then record the encoder's
# int8 latents, the generator's images and the runtime's answers on real faces on both machines
# and compare them (tests/platform/probe.py): latents and images bit-identical, same labels.
#
# Three artefacts of the emulated machine decide whether the results mean anything (none of
# them exists on a real Jetson):
# - QEMU user mode shows the host's x86 /proc/cpuinfo, and LiteRT crashes while building the
#   interpreter; an aarch64 cpuinfo (Cortex-A78AE, as on Jetson Orin) is mounted over it.
# - QEMU's default `max` CPU emulates SME, and XNNPACK's int8 results are then wrong (latents
#   off by up to 1.98 in [-1, 1]); QEMU_CPU=cortex-a76 (ARMv8.2 + dot product, like the A78AE)
#   gives exact results.
# - Without /sys the CPU probe of LiteRT's kernels cannot list the processors; the generator's
#   int8 images then depend on the batch size (up to 4 quantisation steps between one-by-one and
#   batched). With /sys mounted they are bit-identical to x86_64 either way.
#
# Environment: CLIFER_ARM64_ROOT (default $CLIFER_PLATFORM_CACHE/arm64-bookworm, that is
# /var/tmp/clifer-edge/arm64-bookworm unless set; outside the
# repository, reused between runs, delete it to start afresh), CLIFER_DATA_DIR (default
# ../shared/data), PYTHON (the x86_64 interpreter with the package importable; default python3),
# CLIFER_DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Exit status: 0 agreed, 1 failed, 77 skipped (this machine cannot; the reason is printed on a
# line starting with "SKIP:").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
root="${CLIFER_ARM64_ROOT:-${CLIFER_PLATFORM_CACHE:-/var/tmp/clifer-edge}/arm64-bookworm}"
mirror="${CLIFER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
data="${CLIFER_DATA_DIR:-$repo/../shared/data}"
python="${PYTHON:-python3}"
suite=bookworm
# Bumped when the root's recipe changes: a root with another stamp is rebuilt.
recipe="2 $suite python3 python3-venv python3-dev gcc libc6-dev ca-certificates ccache"
# The robot-side tests run there (memory, faces and preprocessing, models, runtime).
mapfile -t tests < <(grep -v '^#' "$here/robot-side-tests.txt")

skip() { echo "SKIP: $*"; exit 77; }
step() { echo "== $* ($(date +%H:%M:%S))"; }
start_all=$SECONDS

# -- can this machine do it? ---------------------------------------------------------------------
[ "$(uname -m)" = x86_64 ] || skip "the comparison is against x86_64; this machine is $(uname -m)"
[ "$(id -u)" = 0 ] || skip "needs root (debootstrap, chroot, mounts); run it with sudo"
for cmd in unshare chroot mount flock; do
    command -v "$cmd" >/dev/null || skip "the command $cmd is missing"
done
data="$(cd "$data" 2>/dev/null && pwd)" || skip "no shared data at $data; set CLIFER_DATA_DIR"
[ -f "$data/ckplus48.npz" ] || skip "no ckplus48.npz in $data; set CLIFER_DATA_DIR"
"$python" -c "import clifer_edge.memory._gwr" 2>/dev/null ||
    skip "$python cannot import the built package (pip install -e . first, or set PYTHON)"

reachable() {
    "$python" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=15).close()
EOF
}
reachable "https://pypi.org/simple/pip/" || skip "PyPI is not reachable (pip needs aarch64 wheels)"

if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || skip "qemu-user-static and debootstrap are missing (no apt-get)"
    step "installing qemu-user-static and debootstrap with apt-get"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends qemu-user-static debootstrap; } >/dev/null ||
        skip "apt-get could not install qemu-user-static and debootstrap"
fi

binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || skip "cannot mount binfmt_misc"
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [ -f "$conf" ] || skip "qemu-user-static registers no aarch64 binfmt ($conf missing)"
    # The F flag opens the interpreter now, so it also runs inside the chroot.
    cat "$conf" >"$binfmt/register" 2>/dev/null || skip "cannot register qemu-aarch64 in binfmt_misc"
fi
grep -q '^enabled' "$binfmt/qemu-aarch64" || skip "the qemu-aarch64 binfmt entry is disabled"
interpreter="$(sed -n 's/^interpreter //p' "$binfmt/qemu-aarch64")"
grep -q '^flags:.*F' "$binfmt/qemu-aarch64" || fix_interpreter=1

# -- the root: build once, then reuse ------------------------------------------------------------
mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9 # one run at a time per root (the lock is released when this script ends)
if [ ! -f "$root/.clifer-recipe" ] || [ "$(cat "$root/.clifer-recipe")" != "$recipe" ]; then
    reachable "$mirror/dists/$suite/Release" || skip "the Debian archive $mirror is not reachable"
    step "building the arm64 $suite root in $root (first run only)"
    start=$SECONDS
    rm -rf "$root" "$root.partial"
    include="$(echo "$recipe" | cut -d' ' -f3- | tr ' ' ',')"
    debootstrap --arch=arm64 --variant=minbase --include="$include" "$suite" "$root.partial" \
        "$mirror" >"$root.partial.log" 2>&1 || {
        tail -20 "$root.partial.log"
        echo "FAILED: debootstrap (log: $root.partial.log)"
        exit 1
    }
    chroot "$root.partial" python3 -m venv /opt/venv
    echo "$recipe" >"$root.partial/.clifer-recipe"
    mv "$root.partial" "$root"
    rm -f "$root.partial.log"
    echo "root built in $((SECONDS - start)) s"
else
    step "reusing the arm64 root in $root"
fi
if [ "${fix_interpreter:-0}" = 1 ]; then # binfmt without F: the interpreter must be in the root
    mkdir -p "$root$(dirname "$interpreter")"
    cp -L "$interpreter" "$root$interpreter"
fi

# -- run there ---------------------------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/clifer-aarch64.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cpuinfo="$work/cpuinfo"
for ((i = 0; i < $(nproc --all); i++)); do sed "s/@N@/$i/" "$here/cpuinfo-cortex-a78ae.txt"; done >"$cpuinfo"
"$python" "$here/probe.py" constraints "$repo/pyproject.toml" >"$work/constraints.txt"
# The working tree as the robot gets it (tracked and new files), and the tests apart from it, so
# they import the installed package.
rm -rf "$root/opt/src" "$root/opt/tests" && mkdir -p "$root/opt/src" "$root/opt/tests"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$repo" ls-files -z --cached --others --exclude-standard |
        (cd "$repo" && xargs -0 tar -cf - --ignore-failed-read 2>/dev/null) | tar -xf - -C "$root/opt/src"
else
    tar -cf - -C "$repo" --exclude=build --exclude='*.so' --exclude='.venv*' . | tar -xf - -C "$root/opt/src"
fi
# The tests, the benchmark scripts some of them run (kill_storm.py), their pytest settings.
cp -r "$root/opt/src/tests" "$root/opt/src/benchmarks" "$root/opt/src/pyproject.toml" "$root/opt/tests/"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# pip there trusts what this machine trusts (a proxy's own CA, say), not only Debian's bundle.
for ca in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}" /etc/ssl/certs/ca-certificates.crt; do
    [ -n "$ca" ] && [ -f "$ca" ] && cp -L "$ca" "$work/ca.crt" && break
done
# What to install there: the build requirements, then the package with its robot-side extras.
read -r extras build_requires < <("$python" "$here/probe.py" install "$repo/pyproject.toml")
(cd "$root/opt/tests/tests" && ls ${tests[*]}) >"$work/tests.txt" || {
    echo "FAILED: a test module pattern matches nothing: ${tests[*]}"
    exit 1
}

cat >"$root/opt/run.sh" <<EOF
set -euo pipefail
export HOME=/root PATH=/opt/venv/bin:/usr/bin:/bin LANG=C.UTF-8 CLIFER_DATA_DIR=/mnt/data
export QEMU_CPU=cortex-a76 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_COMPILE=1 MPLBACKEND=Agg
# The compiler is what takes longest under emulation: ccache skips it while the generated C is
# unchanged (hence the build in the venv, whose paths stay the same, rather than an isolated one).
export CC="ccache gcc" CCACHE_DIR=/root/.ccache
if [ -f /mnt/out/ca.crt ]; then export PIP_CERT=/mnt/out/ca.crt SSL_CERT_FILE=/mnt/out/ca.crt; fi
echo "machine \$(uname -m), \$(python3 --version), QEMU_CPU=\$QEMU_CPU, cpuinfo: \$(grep -m1 'CPU part' /proc/cpuinfo)"
cd /opt/src
t=\$SECONDS
pip install -q -c /mnt/out/constraints.txt $build_requires
pip install -q --no-build-isolation -c /mnt/out/constraints.txt .$extras
echo "pip install . took \$((SECONDS - t)) s (ccache: \$(ccache -s | grep -iE '^ *(cache )?hits' | head -1 | tr -s ' '))"
cd /opt/tests
t=\$SECONDS
status=0
pytest -p no:cacheprovider -q \$(sed 's|^|tests/|' /mnt/out/tests.txt) >/mnt/out/pytest.log 2>&1 || status=\$?
tail -25 /mnt/out/pytest.log
echo "tests took \$((SECONDS - t)) s"
cd /
t=\$SECONDS
python /opt/src/tests/platform/probe.py run --data-dir /mnt/data --out /mnt/out/aarch64.npz
echo "probe took \$((SECONDS - t)) s"
exit \$status
EOF

step "installing and testing on aarch64 (QEMU_CPU=cortex-a76)"
start=$SECONDS
set +e
# A private mount namespace: every mount below disappears with it, even if this is killed.
unshare --mount --propagation private -- bash -euc '
    root=$1 work=$2 data=$3
    mount -t proc proc "$root/proc"
    mount --bind "$work/cpuinfo" "$root/proc/cpuinfo"
    mount --rbind /dev "$root/dev"
    mount -t sysfs -o ro sysfs "$root/sys"
    mount -t tmpfs -o size=4g tmpfs "$root/tmp"
    mkdir -p "$root/mnt/data" "$root/mnt/out"
    mount --bind "$data" "$root/mnt/data" && mount -o remount,bind,ro "$root/mnt/data"
    mount --bind "$work" "$root/mnt/out"
    exec chroot "$root" /usr/bin/env -i bash /opt/run.sh
' bash "$root" "$work" "$data"
status=$?
set -e
echo "aarch64 part took $((SECONDS - start)) s"
if [ ! -f "$work/aarch64.npz" ]; then
    echo "FAILED: the aarch64 run stopped before recording its results (status $status)"
    exit 1
fi

step "the same probe on $(uname -m)"
(cd / && "$python" "$here/probe.py" run --data-dir "$data" --out "$work/x86_64.npz")
step "comparing"
compared=0
"$python" "$here/probe.py" compare "$work/x86_64.npz" "$work/aarch64.npz" || compared=$?
echo "platform check took $((SECONDS - start_all)) s"
if [ "$status" != 0 ]; then
    echo "FAILED: tests on aarch64 (pytest status $status)"
    exit 1
fi
[ "$compared" = 0 ] || exit 1
echo "PASSED: aarch64 tests pass, latents bit-identical and answers the same as on x86_64"
