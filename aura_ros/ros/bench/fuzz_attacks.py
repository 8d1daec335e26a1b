"""Fuzzing aura_node with the inputs found from outside in issue 23: strategies, oracle, checks.

Beside fuzz_cases.py (raw images and joint states on a one-camera model), each kind here runs
on a node of its own (`KINDS`: the model and parameters it needs):

  features      a features-in model: good vectors, finite but huge ones (1e15 to 3e38),
                NaN/Inf, wrong sizes and encodings;
  compressed    JPEG/PNG frames (image_transport compressed): intact, truncated anywhere,
                declared-size bombs (a small PNG or JPEG declaring 4096x4096), a JPEG or PNG
                whose header claims more pixels than its data holds, flipped bytes, garbage;
  two_cameras   stamp attacks on a two-camera model: a frame an hour (or more) ahead, a camera
                restarting with earlier stamps, a frame left behind; then a good pair must step.

Huge finite values may overflow inside a model or not: the oracle then accepts a step or a
refusal as 'nonfinite_step'/'nonfinite_features' (OVERFLOW), and `nonfinite_numbers` checks
what it cannot predict: no published message (chunks, gate, /diagnostics) carries a NaN or Inf.
Needs hypothesis: import this module only where it is installed.
"""

import io
import math
import re
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
from hypothesis import strategies as st

from .fuzz_cases import HUGE, JOINTS, OVERFLOW, OVERFLOW_REASONS, image_msg

ANY = 'any refusal or a step'                # flipped bytes: no exact verdict, only the rules
D_MODEL = 32
SIZE = (24, 32)                              # (height, width) of every fuzz model's cameras
CAMERAS = ('front', 'wrist')
# reasons the new kinds may give on top of fuzz_cases.KNOWN
KNOWN = {'too_large', 'decode_failed', 'compressed_format', 'features_encoding',
         'features_size'}
_NONFINITE_TEXT = re.compile(r'=\s*[-+]?(nan|inf)\b', re.IGNORECASE)


def nonfinite_numbers(msg) -> list:
    """Every NaN/Inf a published message carries, named: JointTrajectory point values,
    DiagnosticArray key values (numbers as text) and 'key=nan' in a status message."""
    found = []
    for i, point in enumerate(getattr(msg, 'points', ())):
        for field in ('positions', 'velocities', 'accelerations', 'effort'):
            if not all(math.isfinite(v) for v in getattr(point, field)):
                found.append(f'point {i} {field} {list(getattr(point, field))}')
    for status in getattr(msg, 'status', ()):
        if _NONFINITE_TEXT.search(status.message):
            found.append(f'{status.name}: {status.message[:120]}')
        for kv in status.values:
            try:
                number = float(kv.value)
            except ValueError:
                continue
            if not math.isfinite(number):
                found.append(f'{status.name} {kv.key}={kv.value}')
    return found


def fuzz_model(root, kind: str, period_s: float = 0.25) -> Path:
    """The random model directory a kind runs on (camera, compressed, features, two_cameras).
    The period is long (chunk 0.25-0.75 s ahead) so no frame the oracle calls fresh is refused
    as too old for its chunk on a loaded machine."""
    from aura_ros.runtime import ImageSpec
    from aura_ros.runtime.init_model import init_model_dir

    cameras = [ImageSpec(SIZE[1], SIZE[0], name=c) for c in CAMERAS] \
        if kind == 'two_cameras' else None
    init_model_dir(root, image_size=SIZE, d_model=D_MODEL, actions=JOINTS, chunk=3,
                   joints=() if kind == 'features' else JOINTS, action_period_s=period_s,
                   memory={'d_key': 8, 'd_val': 8, 'gate_init_bias': 0.0}, cameras=cameras,
                   features_in=kind == 'features', name=f'fuzz_{kind}')
    return Path(root)


# -- features ------------------------------------------------------------------------------------

unit = st.floats(-1.0, 1.0, width=32)


@st.composite
def features_inputs(draw):
    kind = draw(st.sampled_from(['normal', 'normal', 'huge', 'huge', 'nonfinite', 'size',
                                 'encoding']))
    values = np.asarray(draw(st.lists(unit, min_size=D_MODEL, max_size=D_MODEL)), np.float32)
    width, encoding = D_MODEL, '32FC1'
    if kind == 'normal':
        values *= 3
    elif kind == 'huge':
        scale = draw(st.sampled_from([1e15, 1e20, 1e25, 1e30, 3e38]))
        values = (values.astype(np.float64) * scale).astype(np.float32)
        if not np.abs(values).max() >= HUGE:
            values[draw(st.integers(0, D_MODEL - 1))] = scale
    elif kind == 'nonfinite':
        for _ in range(draw(st.integers(1, 3))):
            values[draw(st.integers(0, D_MODEL - 1))] = draw(st.sampled_from(
                [math.nan, math.inf, -math.inf]))
    elif kind == 'size':
        width = draw(st.integers(0, 2 * D_MODEL).filter(lambda w: w != D_MODEL))
        values = np.resize(values, width)
    else:
        encoding = draw(st.sampled_from(['32FC3', '32FC2', '64FC1', 'rgb8', '']))
    return dict(kind=kind, values=values, width=width, encoding=encoding)


def features_verdict(f: dict) -> Optional[str]:
    if f['encoding'] != '32FC1':
        return 'features_encoding'
    if f['width'] != D_MODEL:
        return 'features_size'
    if not np.isfinite(f['values']).all():
        return 'nonfinite_features'
    if np.abs(f['values']).max() >= HUGE:
        return OVERFLOW
    return None


def features_message(f: dict, stamp):
    from sensor_msgs.msg import Image

    data = np.ascontiguousarray(f['values'], '<f4').tobytes()
    msg = Image(height=1, width=f['width'], encoding=f['encoding'], step=4 * f['width'],
                data=data)
    msg.header.stamp = stamp
    return msg


# -- compressed ----------------------------------------------------------------------------------

def encode(pixels: np.ndarray, fmt: str) -> bytes:
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(pixels).save(out, fmt.upper())
    return out.getvalue()


@lru_cache(maxsize=1)
def png_bomb() -> bytes:
    """A ~50 KB PNG declaring 4096x4096 (16.8 Mpx of zeros)."""
    return encode(np.zeros((4096, 4096), np.uint8), 'png')


def claim_size(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """The same file with a header that declares width x height (a PNG's IHDR CRC kept valid)."""
    out = bytearray(data)
    if fmt == 'jpeg':
        sof = next(i for i in range(2, len(out) - 9) if out[i] == 0xFF
                   and out[i + 1] in (0xC0, 0xC1, 0xC2))
        out[sof + 5:sof + 9] = height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
    else:
        out[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
        out[29:33] = zlib.crc32(bytes(out[12:29])).to_bytes(4, 'big')
    return bytes(out)


@st.composite
def compressed_inputs(draw):
    fmt = draw(st.sampled_from(['png', 'jpeg']))
    kind = draw(st.sampled_from(['intact', 'intact', 'truncated', 'bomb', 'claims_more',
                                 'flipped', 'garbage']))
    height, width = draw(st.integers(8, 48)), draw(st.integers(8, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    data = encode(pixels, fmt)
    if kind == 'truncated':
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == 'bomb':
        data = png_bomb() if fmt == 'png' else claim_size(data, fmt, 4096, 4096)
    elif kind == 'claims_more':
        data = claim_size(data, fmt, *draw(st.sampled_from([(512, 512), (1400, 1400)])))
    elif kind == 'flipped':
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(8, len(out) - 1))] ^= draw(st.integers(1, 255))
        data = bytes(out)
    elif kind == 'garbage':
        data = draw(st.sampled_from([b'', b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n'])) + \
            draw(st.binary(max_size=200))
    return dict(fmt=fmt, kind=kind, data=data)


def compressed_verdict(c: dict) -> Optional[str]:
    data, kind = c['data'], c['kind']
    if not (data.startswith(b'\xff\xd8\xff') or data.startswith(b'\x89PNG\r\n\x1a\n')):
        return 'compressed_format'
    if kind == 'intact':
        return None
    if kind == 'bomb':
        return 'too_large'
    if kind == 'truncated' or (kind == 'claims_more' and not jpeg_may_hold(data)):
        return 'decode_failed'
    return ANY


def jpeg_may_hold(data: bytes) -> bool:
    """Whether a JPEG is long enough for the size it declares. Huffman coding spends at least a
    bit on each 8x8 luma block, so a file shorter than that is provably cut or corrupt; a longer
    one may still be (a header claiming more than its data over a big scan: decoders fill the
    rest with grey), which no decoder can tell without decoding: the oracle then accepts a
    step or a refusal and the tally names it ('claims_more stepped')."""
    if not data.startswith(b'\xff\xd8\xff'):
        return False
    sof = next((i for i in range(2, len(data) - 9) if data[i] == 0xFF
                and data[i + 1] in (0xC0, 0xC1, 0xC2)), None)
    if sof is None:
        return False
    height = int.from_bytes(data[sof + 5:sof + 7], 'big')
    width = int.from_bytes(data[sof + 7:sof + 9], 'big')
    return len(data) * 8 >= -(-width // 8) * -(-height // 8)


def compressed_message(c: dict, stamp):
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage(format=c['fmt'], data=c['data'])
    msg.header.stamp = stamp
    return msg


# -- two cameras ---------------------------------------------------------------------------------

camera_attacks = st.fixed_dictionaries({
    'attack': st.sampled_from(['ahead', 'restart', 'behind', 'none']),
    'camera': st.sampled_from(CAMERAS),
    'ahead_s': st.sampled_from([3600.0, 60.0, 1e6]),
    'first': st.sampled_from(CAMERAS),       # which camera of the good pair comes first
})


def attack_verdict(a: dict) -> Optional[str]:
    """The reason the attack frame itself is given (None: it waits for a partner)."""
    return 'future_image' if a['attack'] == 'ahead' else None


# -- the checks ----------------------------------------------------------------------------------

def _handled(h, send, messages: int = 1) -> tuple[dict, int]:
    """send(), wait until the node took `messages` inputs and stepped or refused one;
    (new rejections by reason, steps taken)."""
    node = h.node
    counts, steps, received = dict(node.rejected), node.runtime.steps, node.received
    send()
    h.spin_until(lambda: node.received >= received + messages
                 or sum(node.rejected.values()) > sum(counts.values()), 5, 'input received')
    h.spin_until(lambda: node.runtime.steps + sum(node.rejected.values())
                 > steps + sum(counts.values()), 10, 'input handled')
    return ({k: v - counts.get(k, 0) for k, v in node.rejected.items()
             if v != counts.get(k, 0)}, node.runtime.steps - steps)


def judge(h, send, verdict: Optional[str], stamp, messages: int = 1) -> str:
    """Send an input and check the node against the oracle's verdict: a step (None), one
    refusal by that reason, OVERFLOW or ANY; a refusal leaves the memory state bit-identical.
    Returns what happened: 'stepped', the reason, or LATE (a fresh input that aged past
    max_obs_age_s before the node took it: load, counted apart)."""
    from .fuzz_cases import KNOWN as RAW_KNOWN
    from .fuzz_cases import LATE, MAX_AGE

    state = h.state()
    new, stepped = _handled(h, send, messages)
    assert set(h.node.rejected) <= RAW_KNOWN | KNOWN, dict(h.node.rejected)
    reason = next(iter(new), None)
    assert stepped + sum(new.values()) == 1, ('one step or one refusal', stepped, new)
    age = h.now_ns() * 1e-9 - (stamp.sec + stamp.nanosec * 1e-9)
    if reason == 'stale_image' and verdict != 'stale_image' and age > MAX_AGE:
        outcome = LATE
    elif verdict is None:
        assert stepped, ('expected a step', new)
        outcome = 'stepped'
    elif verdict == OVERFLOW:
        assert stepped or reason in OVERFLOW_REASONS, (verdict, new)
        outcome = 'stepped' if stepped else reason
    elif verdict == ANY:
        assert stepped or reason != 'step_failed', (verdict, new)
        outcome = 'stepped' if stepped else reason
    else:
        assert reason == verdict, (verdict, new)
        outcome = reason
    if not stepped:
        for key, value in h.state().items():
            assert np.array_equal(value, state[key]), ('state changed on a refusal', key)
    return outcome


def check_features(h, f: dict) -> str:
    stamp = h.now_msg()
    return judge(h, lambda: h.publish('features', features_message(f, stamp)),
                 features_verdict(f), stamp)


def check_compressed(h, c: dict) -> str:
    h.good_joints()
    stamp = h.now_msg()
    outcome = judge(h, lambda: h.publish('image/compressed', compressed_message(c, stamp)),
                    compressed_verdict(c), stamp)
    return f'{c["kind"]} stepped' if outcome == 'stepped' and c['kind'] != 'intact' \
        else outcome


def check_attack(h, a: dict, pixels: np.ndarray) -> str:
    """One stamp attack on a two-camera node, then a good pair, which must step: one bad or
    lost frame never blinds the node."""
    h.good_joints()
    node = h.node
    offset = {'ahead': a['ahead_s'], 'restart': 0.2, 'behind': -0.2}.get(a['attack'])
    if offset is not None:
        stamp = h.stamp_at(offset)
        message = image_msg(pixels, stamp)
        if attack_verdict(a):
            judge(h, lambda: h.publish(f'{a["camera"]}/image', message), attack_verdict(a),
                  stamp)
        else:                                   # it waits for a partner that never comes
            steps, received = node.runtime.steps, node.received
            h.publish(f'{a["camera"]}/image', message)
            h.spin_until(lambda: node.received > received, 5, 'the lone frame')
            assert node.runtime.steps == steps, 'a lone frame was stepped'
    stamp = h.now_msg()
    second = CAMERAS[1] if a['first'] == CAMERAS[0] else CAMERAS[0]

    def pair():
        h.publish(f'{a["first"]}/image', image_msg(pixels, stamp))
        h.publish(f'{second}/image', image_msg(pixels, stamp))

    outcome = judge(h, pair, None, stamp, messages=2)
    return a['attack'] if outcome == 'stepped' else outcome
