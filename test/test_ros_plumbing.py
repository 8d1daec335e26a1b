"""ROS 2 plumbing over DDS: messages and a service between two nodes of one process."""

import os

TIMEOUT = 15.0


def test_dds_discovery_is_loopback_only():
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert 0 <= int(os.environ['ROS_DOMAIN_ID']) <= 101


def test_image_and_joint_state_reach_a_second_node(make_node, executor, wait_for):
    from sensor_msgs.msg import Image, JointState

    talker = make_node('aura_test_talker')
    listener = make_node('aura_test_listener')
    images, joints = [], []
    listener.create_subscription(Image, 'image', images.append, 10)
    listener.create_subscription(JointState, 'joint_states', joints.append, 10)
    image_pub = talker.create_publisher(Image, 'image', 10)
    joint_pub = talker.create_publisher(JointState, 'joint_states', 10)
    wait_for(
        lambda: image_pub.get_subscription_count() and joint_pub.get_subscription_count(),
        TIMEOUT,
        executor,
        'discovery of the subscriptions',
    )

    pixels = bytes(range(4 * 3 * 3))  # 4x3 rgb8, every byte distinct
    image = Image(height=3, width=4, encoding='rgb8', is_bigendian=0, step=4 * 3, data=pixels)
    image.header.frame_id = 'camera'
    image.header.stamp.sec = 12
    image.header.stamp.nanosec = 345
    joint_state = JointState(
        name=['shoulder', 'elbow'], position=[0.5, -1.25], velocity=[0.0, 2.0], effort=[]
    )
    image_pub.publish(image)
    joint_pub.publish(joint_state)
    wait_for(lambda: images and joints, TIMEOUT, executor, 'the image and the joint state')

    got = images[0]
    assert (got.height, got.width, got.encoding, got.step) == (3, 4, 'rgb8', 12)
    assert bytes(got.data) == pixels
    assert got.header.frame_id == 'camera'
    assert (got.header.stamp.sec, got.header.stamp.nanosec) == (12, 345)
    assert list(joints[0].name) == ['shoulder', 'elbow']
    assert list(joints[0].position) == [0.5, -1.25]
    assert list(joints[0].velocity) == [0.0, 2.0]
    assert list(joints[0].effort) == []


def test_trigger_service_answers(make_node, executor, wait_for):
    from std_srvs.srv import Trigger

    server = make_node('aura_test_server')
    caller = make_node('aura_test_caller')
    calls = []

    def on_trigger(request, response):
        calls.append(request)
        response.success = True
        response.message = f'reset after {len(calls)} call(s)'
        return response

    server.create_service(Trigger, 'reset', on_trigger)
    client = caller.create_client(Trigger, 'reset')
    wait_for(client.service_is_ready, TIMEOUT, executor, 'the reset service')
    future = client.call_async(Trigger.Request())
    wait_for(future.done, TIMEOUT, executor, 'the reset response')

    assert future.result().success is True
    assert future.result().message == 'reset after 1 call(s)'
    assert len(calls) == 1
