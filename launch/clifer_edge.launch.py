"""Start clifer_edge_node: personalised expression recognition for the faces the robot sees.

    ros2 launch clifer_edge clifer_edge.launch.py mode:=ros4hri
    ros2 launch clifer_edge clifer_edge.launch.py camera_topic:=/head_front_camera/image_raw

Arguments override the parameters file (default: the package's config/clifer_edge.yaml); every
other parameter is set in that file.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution(
        [FindPackageShare("clifer_edge"), "config", "clifer_edge.yaml"]
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=default_params,
                description="ROS parameters file of the node",
            ),
            DeclareLaunchArgument(
                "mode",
                default_value="camera",
                choices=["camera", "ros4hri"],
                description="camera: detect faces in camera_topic; ros4hri: ROS4HRI face crops",
            ),
            DeclareLaunchArgument(
                "camera_topic",
                default_value="/camera/image_raw",
                description="sensor_msgs/Image topic (camera mode)",
            ),
            DeclareLaunchArgument(
                "memory_dir",
                default_value="",
                description="directory of the persons' memories ('' = runtime config's)",
            ),
            Node(
                package="clifer_edge",
                executable="clifer_edge_node",
                name="clifer_edge",
                output="screen",
                emulate_tty=True,
                parameters=[
                    LaunchConfiguration("params_file"),
                    {
                        "mode": LaunchConfiguration("mode"),
                        "camera_topic": LaunchConfiguration("camera_topic"),
                        "memory_dir": LaunchConfiguration("memory_dir"),
                    },
                ],
            ),
        ]
    )
