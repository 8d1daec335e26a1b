"""The training-only mixture head (MemoryConfig.mixture, TrainingConfig.utility_loss 'mixture'):
its NLL values knowing a mode the MSE's mean hides, it trains beside the action head, and the
run time never sees it."""

import math
from types import SimpleNamespace

import onnx
import pytest
import torch

from aura_ros.memory import AuraMemLayer, ConfigError, MemoryConfig, build_model
from aura_ros.memory.losses import mixture_nll, mixture_outputs
from aura_ros.memory.training import TrainingConfig, TrainingError, train
from aura_ros.runtime.export import export_memory_step
from aura_ros.training.trainer.config import TrainerConfig, TrainerError

CONFIG = MemoryConfig(d_model=12, d_key=4, d_val=4, d_action=2, chunk=3, head_hidden=16,
                      mixture=3)
LABEL_FREE = dict(utility='gradient', write_budget=(0.05, 0.01), utility_loss='mixture')


def head_out(logits, log_sigma, means):
    """The head's raw output for K components: logits, the log sigma, then K flattened means."""
    return torch.cat([torch.tensor(logits), torch.tensor(log_sigma),
                      torch.as_tensor(means).flatten()])


def test_one_component_is_the_gaussian_nll_per_element():
    target = torch.tensor([[0.3, -0.2], [0.1, 0.5]])
    mean = torch.tensor([[0.0, 0.0], [0.2, 0.2]])
    nll = mixture_nll(head_out([0.7], [math.log(0.5)], mean), target, 1)
    sq = ((target - mean) ** 2).mean()
    expected = 0.5 * math.log(2 * math.pi) + math.log(0.5) + sq / (2 * 0.25)
    assert torch.allclose(nll, torch.as_tensor(expected, dtype=nll.dtype))


def test_knowing_the_middle_mode_is_worth_what_knowing_an_outer_one_is():
    """Reaches to -1, 0, +1: without a cue the MSE's best guess is 0, so a cue for the middle
    reach is worth nothing to it; the mixture's NLL falls by the same log 3 for every mode."""
    modes = [[[-1.0, -1.0]], [[0.0, 0.0]], [[1.0, 1.0]]]
    sigma = [math.log(0.1)]

    def nll(target, logits):
        return float(mixture_nll(head_out(logits, sigma, modes), torch.tensor(target), 3))

    unsure = [0.0, 0.0, 0.0]
    for mode, target in enumerate(modes):
        sure = [20.0 if k == mode else 0.0 for k in range(3)]
        gain = nll(target, unsure) - nll(target, sure)
        assert gain == pytest.approx(math.log(3) / 2, rel=1e-4)   # per element: n = 2
    mse_of_the_mean = [float((torch.tensor(t) ** 2).mean()) for t in modes]
    assert mse_of_the_mean[1] == 0.0 < mse_of_the_mean[0]


def test_the_head_is_absent_by_default_and_never_changes_the_action():
    assert not any(n.startswith('mixture') for n in AuraMemLayer(CONFIG.replace(mixture=0))
                   .state_dict())
    with pytest.raises(ValueError, match='MemoryConfig.mixture'):
        AuraMemLayer(CONFIG.replace(mixture=0)).mixture_loss(torch.zeros(1, 16),
                                                              torch.zeros(1, 3, 2))
    torch.manual_seed(0)
    with_head = AuraMemLayer(CONFIG)
    without = AuraMemLayer(CONFIG.replace(mixture=0))
    missing, _ = without.load_state_dict(with_head.state_dict(), strict=False)
    assert not missing
    z = torch.randn(2, 9, CONFIG.d_model)
    with torch.no_grad():
        assert torch.equal(with_head(z)['action'], without(z)['action'])
    with pytest.raises(ConfigError, match='mixture'):
        CONFIG.replace(mixture=-1)


def test_the_exported_step_leaves_the_head_out(tmp_path):
    graph = onnx.load(str(export_memory_step(AuraMemLayer(CONFIG), tmp_path / 'm.onnx'))).graph
    widths = {tuple(t.dims) for t in graph.initializer}
    assert (mixture_outputs(CONFIG.mixture, CONFIG.chunk, CONFIG.d_action), CONFIG.head_hidden) \
        not in widths
    assert (CONFIG.chunk * CONFIG.d_action, CONFIG.head_hidden) in widths


def test_it_trains_beside_the_action_head_and_scores_the_gates_writes():
    torch.manual_seed(1)
    model = build_model('aura', CONFIG)
    episodes = [(torch.randn(40, CONFIG.d_model), torch.randn(40, 3, 2)) for _ in range(4)]
    before = model.mixture_out.weight.detach().clone()
    history = train(model, episodes, TrainingConfig(warmup_iters=2, gate_iters=2, carry_iters=1,
                                                    window=20, batch=2, **LABEL_FREE))
    assert not torch.equal(before, model.mixture_out.weight)
    for phase in ('warmup', 'gate', 'carry'):
        assert math.isfinite(history.last(phase)['mixture'])
    assert 'ib' in history.last('gate')


def test_a_mixture_target_needs_its_head_and_a_gradient_utility():
    with pytest.raises(TrainingError, match='MemoryConfig.mixture'):
        train(build_model('aura', CONFIG.replace(mixture=0)),
              [(torch.randn(20, 12), torch.randn(20, 3, 2))],
              TrainingConfig(warmup_iters=1, gate_iters=1, carry_iters=0, **LABEL_FREE))
    with pytest.raises(TrainingError, match='utility_loss'):
        TrainingConfig(utility_loss='nll')
    with pytest.raises(TrainingError, match="utility 'gradient'"):
        TrainingConfig(utility_loss='mixture')
    with pytest.raises(TrainerError, match='mixture'):
        TrainerConfig(mixture=-2)


def test_the_trainers_config_carries_the_head_and_the_card_names_the_target():
    """`mixture: 3` in a train.yaml reaches the memory's config and survives the round trip;
    the card says what scored the writes, with the head (the default) and without."""
    from aura_ros.training.trainer.model_dir import memory_config
    from aura_ros.training.trainer.report import recipe_text

    config = TrainerConfig.from_dict({'mixture': 3})
    assert TrainerConfig.from_dict(config.to_dict()) == config
    demos = SimpleNamespace(action_names=['a', 'b'], chunk=3)    # what memory_config reads
    assert memory_config(config, demos, 16, 0.5).mixture == 3
    assert 'mixture head' in recipe_text(config.training, config.data)
    assert 'mixture head' not in recipe_text(TrainerConfig(mixture=0).training, config.data)
