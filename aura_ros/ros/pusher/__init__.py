"""Rig: the Pusher show-then-hide world (aura_ros.tasks.pusher) as a ROS 2 simulator, recorder."""
