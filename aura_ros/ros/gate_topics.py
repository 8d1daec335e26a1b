"""`~/gate_image` and `~/gate_values`: the gate for people and for plotting tools.

`~/gate_values` (std_msgs/Float64MultiArray, every step, reliable depth 10): the gate's numbers
in the fixed order of GATE_VALUES, which `layout.dim[0].label` also spells out, so `ros2 topic
echo` names them. A standard numeric message plots without a plugin in PlotJuggler
(`/aura/gate_values/data[0]`...), rqt_plot (`/aura/gate_values/data[0]`) and Foxglove's Plot
panel (`/aura/gate_values.data[0]`); the strings of `~/gate` plot in none of them. Float64, not
Float32: the step and write counts stay exact past 2^24 steps.

`~/gate_image` (sensor_msgs/Image rgb8): aura_ros/runtime/gate_view.py's picture, drawn by a
timer at `gate_image_rate_hz` on the executor thread, and only while the topic has a
subscriber. The inference worker only calls `record` (an append to a ring buffer) per step.
"""

from rclpy.clock import Clock, ClockType
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from aura_ros.runtime.gate_view import GateView

# ~/gate_values: data[i] is GATE_VALUES[i]; p and wrote first, the two a plot wants most
GATE_VALUES = ('p', 'wrote', 'threshold', 'surprise', 'step', 'writes', 'write_rate',
               'latency_ms')


class GateTopics:
    """The two publishers, the draw timer and the GateView of one configured node (of one
    robot: `prefix` is where its outputs are, ~/ or <robot>/<node>/ in a fleet)."""

    def __init__(self, node, steps: int, rate_hz: float, thumbnails: int, prefix: str = '~/'):
        self.node = node
        self.view = GateView(steps, thumbnails)
        self.image_pub = node.create_lifecycle_publisher(Image, f'{prefix}gate_image', 1)
        self.values_pub = node.create_lifecycle_publisher(Float64MultiArray,
                                                          f'{prefix}gate_values', 10)
        self.timer = node.create_timer(1.0 / rate_hz, self.draw,
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._layout = [MultiArrayDimension(label=','.join(GATE_VALUES), size=len(GATE_VALUES),
                                            stride=len(GATE_VALUES))]

    def record(self, gate: dict, frame=None) -> None:
        """One step (the node's gate dict, with its threshold): the worker's only cost here."""
        self.view.record(gate['step'], gate['p'], gate['gate_threshold'], gate['surprise'],
                         gate['wrote'], gate['writes'], frame)
        msg = Float64MultiArray(data=[float(gate[name if name != 'threshold'
                                                  else 'gate_threshold'])
                                      for name in GATE_VALUES])
        msg.layout.dim = self._layout
        self.values_pub.publish(msg)

    def draw(self) -> None:
        """Timer: render and publish the picture, if anyone is looking."""
        if not self.image_pub.is_activated or self.image_pub.get_subscription_count() == 0:
            return
        pixels = self.view.render()
        height, width = pixels.shape[:2]
        msg = Image(height=height, width=width, encoding='rgb8', step=width * 3)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.data = pixels.tobytes()
        self.image_pub.publish(msg)

    def destroy(self) -> None:
        self.node.destroy_timer(self.timer)
        self.node.destroy_lifecycle_publisher(self.image_pub)
        self.node.destroy_lifecycle_publisher(self.values_pub)
