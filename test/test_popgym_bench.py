"""The POPGym benchmark's labels are the environments' own answers, and one tiny run goes end to
end (train, closed-loop score, report) on the real popgym environments."""

import json

import pytest

from aura_ros.training import popgym_bench as pb


@pytest.mark.parametrize('name', sorted(pb.ENVS))
def test_playing_the_labels_earns_the_maximum_return(name):
    env = pb.make_env(name)
    kind = pb.ENVS[name][2]
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        total, done, steps = 0.0, False, 0
        while not done:
            label, _ = pb._label(env, kind)
            obs, reward, term, trunc, _ = env.step(label)
            total += reward
            done = term or trunc
            steps += 1
        assert total == pytest.approx(1.0, abs=1e-6), (name, seed, total, steps)


def test_first_step_flag_is_set_on_the_first_step_only():
    x, y, m = pb.collect('RepeatFirstEasy+flag', 4, seed=0)
    assert x.shape[-1] == 5                         # 4 suits + the flag
    assert x[:, 0, -1].eq(1).all() and x[:, 1:, -1].eq(0).all()
    assert (y == y[:, :1]).all()                    # the label is the first card throughout
    _, _, mask = pb.collect('RepeatPreviousEasy', 2, seed=0)
    assert not mask[:, :3].any() and mask[:, 3:].all()


def test_tiny_run_end_to_end(tmp_path):
    settings = pb.PopgymSettings(updates=4, warmup=2, batch=4, train_episodes=8,
                                 eval_episodes=3, d_key=4, d_val=4, head_hidden=8)
    result = pb.run(['RepeatFirstEasy'], ['aura_time', 'gru', 'no_memory'], 1, settings,
                    log=lambda *_: None)
    rows = {r['method']: r for r in result['rows']}
    assert rows['gru']['state_bytes'] == rows['aura_time']['state_bytes'] == (16 + 4) * 4
    assert rows['no_memory']['writes'] == 0 and rows['gru']['writes'] == rows['gru']['steps']
    for row in rows.values():
        assert -1.0 <= row['return'] <= 1.0
    result.update(command='test', commit='', machine={'platform': 'x', 'cpus': 1, 'torch': 't'},
                  settings={}, wall_s=1.0)
    path = tmp_path / 'p.json'
    path.write_text(json.dumps(result))
    merged = pb.merge([path, path], tmp_path / 'm.json')
    assert len(merged['rows']) == 6 and merged['summary']['RepeatFirstEasy']['gru']['seeds'] == 2
    assert (tmp_path / 'm.md').read_text().count('| RepeatFirstEasy |') == 3
