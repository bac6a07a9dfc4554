"""The ROS 2 face of clifer-edge: the only package that imports rclpy.

:mod:`clifer_edge.ros.node` wraps :class:`clifer_edge.runtime.ExpressionRuntime` in a node that
follows ROS4HRI (REP-155); :mod:`clifer_edge.ros.conversions` turns ROS images into arrays and
runtime results into message fields without importing rclpy, so it can be tested anywhere.
"""
