"""Start clifer_edge_node, a managed (lifecycle) node, and bring it to active.

    ros2 launch clifer_edge clifer_edge.launch.py mode:=ros4hri
    ros2 launch clifer_edge clifer_edge.launch.py camera_topic:=/head_front_camera/image_raw

Arguments override the parameters file (default: the package's config/clifer_edge.yaml); every
other parameter is set in that file. The node starts unconfigured (autostart false); this file
configures it (loads the models) and, once it is inactive, activates it (subscribes), as a
lifecycle manager would.
"""

import lifecycle_msgs.msg
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution(
        [FindPackageShare("clifer_edge"), "config", "clifer_edge.yaml"]
    )
    node = LifecycleNode(
        package="clifer_edge",
        executable="clifer_edge_node",
        name="clifer_edge",
        namespace="",
        output="screen",
        emulate_tty=True,
        # On Ctrl-C launch sends SIGINT, then SIGTERM and SIGKILL after these many seconds: the
        # node saves every memory on the way out, which can take a while on a loaded board.
        sigterm_timeout="30",
        sigkill_timeout="30",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "autostart": False,
                "mode": LaunchConfiguration("mode"),
                "camera_topic": LaunchConfiguration("camera_topic"),
                "memory_dir": LaunchConfiguration("memory_dir"),
            },
        ],
    )
    configure = EmitEvent(
        event=ChangeState(
            lifecycle_node_matcher=matches_action(node),
            transition_id=lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE,
        )
    )
    activate_when_inactive = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            goal_state="inactive",
            entities=[
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(node),
                        transition_id=lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE,
                    )
                )
            ],
        )
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
                description="camera: detect and track faces in camera_topic; ros4hri: faces of a "
                "ROS4HRI pipeline",
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
            activate_when_inactive,
            node,
            configure,
        ]
    )
