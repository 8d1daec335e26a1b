"""ROS 2 interface: the only package of aura_ros that imports rclpy or ROS message types."""
