# Injected into third-party interface packages (hri_msgs, composition_interfaces) built against the
# ROS 2 wheels from PyPI: build_msgs.sh passes -DCMAKE_PROJECT_INCLUDE=<this file>, so their sources
# stay unmodified. CMake includes this file right after the package's project() call; the deferred
# call then runs at the end of its CMakeLists.txt, once every imported target exists (see
# fix_wheel_python_includes.cmake; a no-op on a normal ROS install).
include("${CMAKE_CURRENT_LIST_DIR}/../src/clifer_msgs/cmake/fix_wheel_python_includes.cmake")
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL clifer_fix_wheel_python_includes)
