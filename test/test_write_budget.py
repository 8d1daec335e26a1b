"""The write-budget IB target (losses.budget_target / budget_ib_loss, TrainingConfig.write_budget):
the gate is asked for the writes that help most, ranked by their utility, never for none."""

import pytest
import torch

from aura_ros.memory.losses import budget_ib_loss, budget_target
from aura_ros.memory.training import TrainingConfig, TrainingError


def test_the_target_is_the_top_share_of_each_row_by_utility():
    u = torch.tensor([[0.1, 0.9, 0.3, 0.0, 0.5, 0.2, 0.05, 0.4, 0.6, 0.7],
                      [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]])
    t = budget_target(u, 0.3)
    assert t[0].nonzero().flatten().tolist() == [1, 8, 9]      # 0.9, 0.6, 0.7
    # a row whose helpful writes are fewer than the budget asks only for those
    assert t[1].nonzero().flatten().tolist() == [0, 9]


def test_the_target_never_asks_for_a_write_that_does_not_help_or_a_padded_step():
    u = torch.tensor([[-0.5, -0.1, 0.0, 0.3, 0.8]])
    valid = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])            # the last step is padding
    t = budget_target(u, 0.6, valid)
    assert t.tolist() == [[0.0, 0.0, 0.0, 1.0, 0.0]]
    # a small budget still asks for one write per row (ceil), never for none
    assert budget_target(u, 1e-4, valid).sum() == 1


def test_the_loss_pulls_the_chosen_steps_up_and_the_rest_down():
    u = torch.tensor([[0.0, 0.9, 0.1, 0.2, 0.0, 0.0, 0.0, 0.0]])
    logit = torch.zeros_like(u, requires_grad=True)
    budget_ib_loss(torch.sigmoid(logit), u, 0.125).backward()
    grad = logit.grad[0]
    assert grad[1] < 0                      # descent raises p where the write helps most
    assert (grad[[0, 2, 3, 4, 5, 6, 7]] > 0).all()
    # the rare positive is weighted up to balance the rest
    assert float(-grad[1]) == pytest.approx(float(grad[[0, 2, 3, 4, 5, 6, 7]].sum()), rel=1e-5)


@pytest.mark.parametrize('balance', [1.0, 0.5, 0.0])
def test_the_balance_decides_how_high_a_sometimes_chosen_frame_is_written(balance):
    """A step chosen in 10% of the windows (1% budget, so 99 negatives per positive): the gate
    probability that minimises the loss is q w / (q w + 1 - q), w = 99 ** balance: 0.92 balanced
    (a likelihood ratio), 0.52 at 0.5, the chance 0.1 itself at 0."""
    rows, steps = 100, 100
    u = torch.zeros(rows, steps)
    u[:, 1] = 1.0                                   # step 1 is chosen in 90 rows ...
    u[:10, 0] = 2.0                                 # ... step 0 in the other 10
    logit = torch.zeros(steps, requires_grad=True)   # one gate output per step, every row
    opt = torch.optim.LBFGS([logit], lr=1.0, max_iter=200, line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = budget_ib_loss(torch.sigmoid(logit).expand(rows, -1), u, 0.01, balance=balance)
        loss.backward()
        return loss
    opt.step(closure)
    w = 99.0 ** balance
    assert torch.sigmoid(logit[0]).item() == pytest.approx(0.1 * w / (0.1 * w + 0.9), abs=1e-3)


def test_the_budget_anneals_from_start_to_end():
    config = TrainingConfig(write_budget=[0.2, 0.02])
    assert config.write_budget == (0.2, 0.02)
    assert config.budget_at(0.0) == pytest.approx(0.2)
    assert config.budget_at(0.5) == pytest.approx(0.2 * 0.1 ** 0.5)
    assert config.budget_at(1.0) == pytest.approx(0.02)
    assert TrainingConfig().budget_at(0.5) is None
    assert config.to_dict()['write_budget'] == [0.2, 0.02]


@pytest.mark.parametrize('bad', [[0.1], [0.0, 0.0], [0.01, 0.1], [0.5, -0.1], 'big', [0.2, 2.0]])
def test_a_bad_budget_names_the_field(bad):
    with pytest.raises(TrainingError, match='write_budget'):
        TrainingConfig(write_budget=bad)


def test_the_trainers_default_gate_target_is_the_write_budget_and_null_restores_the_margin():
    """`train --data` with no config teaches the gate with the budget target (label-free); a
    train.yaml's `training: {write_budget: null}` brings back the margin target; both survive
    the config's round trip (report, checkpoint state, --resume)."""
    from aura_ros.training.trainer.config import WRITE_BUDGET, TrainerConfig, TrainerError
    from aura_ros.training.trainer.report import recipe_text

    for config in (TrainerConfig(), TrainerConfig.from_dict({})):
        assert config.training.write_budget == WRITE_BUDGET
        assert config.training.ib_reduce == 'best'
        assert config.training.utility == 'gradient'
        assert config.training.warmup_write_rate == 0.1
        assert TrainerConfig.from_dict(config.to_dict()).training == config.training
        assert 'annealed' in recipe_text(config.training, config.data)
    with pytest.raises(TrainerError, match="utility 'counterfactual'"):
        TrainerConfig.from_dict({'training': {'write_budget': None}})
    margin = TrainerConfig.from_dict({'training': {'write_budget': None,
                                                   'utility': 'counterfactual'}})
    assert margin.training.write_budget is None
    assert TrainerConfig.from_dict(margin.to_dict()).training.write_budget is None
    assert 'annealed' not in recipe_text(margin.training, margin.data)
