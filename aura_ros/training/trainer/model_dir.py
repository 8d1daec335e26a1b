"""Stage 6: the model directories the run leaves: the model, and one per runnable baseline."""

from dataclasses import replace as with_fields
from pathlib import Path
from typing import Optional

from aura_ros.data.urdf import read_urdf_limits
from aura_ros.memory import MemoryConfig, save_checkpoint
from aura_ros.runtime.model_dir import (
    BACKBONE_FILE,
    IMAGE_MEAN,
    IMAGE_STD,
    CameraSpec,
    ModelSpec,
    OutputGroup,
    Stats,
    save_model_dir,
)

from .config import TrainerConfig, TrainerError

BASELINE_DIR = 'baselines'


def model_spec(cfg: TrainerConfig, demos, memory: MemoryConfig, stats: dict, name: str,
               cameras_spec: Optional[list] = None):
    """The format-2 ModelSpec of the trained model: the only place the trainer builds one."""
    cameras = cameras_spec if cameras_spec is not None else [
        CameraSpec(name=c, width=demos.size_of(c)[1], height=demos.size_of(c)[0],
                   mean=IMAGE_MEAN, std=IMAGE_STD) for c in demos.cameras]
    transports = dict(zip(demos.cameras, demos.camera_transports, strict=False))
    cameras = [with_fields(c, transport=transports.get(c.name, 'raw')) for c in cameras]
    return ModelSpec(name=name, cameras=tuple(cameras), joint_names=demos.joint_names,
                     action_names=demos.action_names, action_period_s=demos.action_period_s,
                     memory=memory,
                     joint_stats=Stats(**stats['joints']) if demos.joint_names else None,
                     action_stats=Stats(**stats['actions']), action_mode=cfg.action_mode,
                     output_groups=tuple(OutputGroup(g, tuple(j))
                                         for g, j in output_groups(cfg, demos).items()),
                     joint_limits=joint_limits(cfg, demos)[0])


def output_groups(cfg: TrainerConfig, demos) -> dict:
    """{group: action names}: the config's, else one per command topic of the data ({}: the one
    ~/action_chunk). TrainerError when they do not cover every action once."""
    groups = dict(cfg.output_groups) or {g: list(n) for g, n in demos.action_groups}
    named = [a for names in groups.values() for a in names]
    if groups and (sorted(named) != sorted(demos.action_names)):
        raise TrainerError(f'train config: output_groups must name every action once; they name '
                           f'{", ".join(named)}, the actions are '
                           f'{", ".join(demos.action_names)}')
    return groups


def joint_limits(cfg: TrainerConfig, demos) -> tuple[dict, str]:
    """({action: (lower, upper)}, where they came from): the config's, else the --urdf file's,
    else the data's robot_description; only the actions' (the targets clipped)."""
    if cfg.joint_limits:
        unknown = sorted(set(cfg.joint_limits) - set(demos.action_names))
        if unknown:
            raise TrainerError(f'train config: joint_limits names {", ".join(unknown)}, not '
                               f'actions ({", ".join(demos.action_names)})')
        limits, origin = cfg.joint_limits, 'the train config'
    elif cfg.urdf:
        limits, origin = read_urdf_limits(cfg.urdf), cfg.urdf
    elif demos.joint_limits:
        limits, origin = demos.joint_limits, 'the robot_description recorded with the data'
    else:
        return {}, 'none given (no joint_limits, --urdf or recorded robot_description)'
    return ({a: tuple(limits[a]) for a in demos.action_names if a in limits}, origin)


def memory_config(cfg: TrainerConfig, demos, d_model: int, threshold: float) -> MemoryConfig:
    return MemoryConfig(d_model=d_model, d_key=cfg.d_key, d_val=cfg.d_val,
                        d_action=len(demos.action_names), chunk=demos.chunk,
                        head_hidden=cfg.head_hidden, gate_threshold=threshold,
                        input_map=cfg.input_map, write_bias=cfg.write_bias,
                        write_decay=cfg.write_decay, mixture=cfg.mixture)

# The runtime runs these baselines as they are (MEMORY_KINDS of the model directory).
RUNNABLE_BASELINES = ('always_write', 'gru', 'no_memory')


def save_baseline_dir(out: Path, spec, method: str, model, result: dict) -> Optional[Path]:
    """<out>/baselines/<method>/: a complete model directory of a baseline that aura_node runs
    as it is (`-p model_dir:=<out>/baselines/<method>`): the same model.yaml and backbone, the
    baseline's memory; always-write at gate threshold 0, so it writes every step."""
    if method not in RUNNABLE_BASELINES:
        return None
    threshold = 0.0 if method == 'always_write' else spec.memory.gate_threshold
    memory = spec.memory.replace(gate_threshold=threshold)
    baseline = with_fields(spec, name=f'{spec.name}_{method}', memory=memory)
    target = out / BASELINE_DIR / method
    backbone = out / BACKBONE_FILE if not spec.features_in else None
    card = (f'# {baseline.name}\n\nThe {method} baseline of `{spec.name}` (../../MODEL_CARD.md): '
            f'the same backbone, trained on the same features with the same call. Held-out '
            f'action error {result["action_error"]:.3g}, {result["writes_per_episode"]:.1f} '
            f'writes per episode.\n\n    ros2 run aura_ros aura_node --ros-args -p '
            f'model_dir:={target}\n')
    save_model_dir(target, baseline, backbone, model, card=card)
    return target


def write_model_dirs(out: Path, spec, backbone, models: dict, results: dict, card: str,
                     baselines: tuple) -> None:
    """The model directory `out` (AURA) and baselines/<name>/ (plus each baseline's checkpoint
    baselines/<name>.safetensors); `backbone` is the trained CNN or the ONNX file to copy."""
    save_model_dir(out, spec, backbone, models['aura'], card=card)
    (out / BASELINE_DIR).mkdir(exist_ok=True)
    for m in baselines:
        save_checkpoint(models[m], out / BASELINE_DIR / f'{m}.safetensors',
                        metadata={'model': spec.name})
        save_baseline_dir(out, spec, m, models[m], results[m])


def make_readable(out: Path) -> None:
    """safetensors writes 0600; an installed model must be readable by the node's user."""
    for path in out.rglob('*'):
        if path.is_file():
            path.chmod(0o644)
