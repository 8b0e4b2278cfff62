"""A run stopped part way and resumed ends exactly where an unbroken run with the same seed
ends: same metrics.jsonl, policy, final weights and metrics."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from automtl.search import search

from search_toy import Interrupt, StopAfter, TINY, toy_data, toy_supermodel




def _run(out, callbacks=(), resume=False):
    train, val, test = toy_data()
    return search(toy_supermodel(), train, val, test, config=TINY, out=out, callbacks=callbacks, resume=resume)


def _lines(path):
    with open(os.path.join(path, "metrics.jsonl")) as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    return out, _run(out)


def _assert_same(unbroken, out, result):
    reference_dir, reference = unbroken
    assert _lines(out) == _lines(reference_dir)
    assert result.policy == reference.policy
    assert result.metrics == reference.metrics and result.val == reference.val
    a, b = reference.model.state_dict(), result.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(os.path.join(out, "policy.json")) as f, open(os.path.join(reference_dir, "policy.json")) as g:
        assert json.load(f) == json.load(g)


@pytest.mark.parametrize("stage", ["pretrain", "policy_train", "post_train"])
def test_resume_after_an_interruption(unbroken, tmp_path, stage):
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        _run(out, [StopAfter(stage, 3)])
    assert not os.path.exists(out / "results.json")
    _assert_same(unbroken, out, _run(out, resume=True))


def test_stages_run_one_at_a_time_end_like_one_run(unbroken, tmp_path):
    out = tmp_path / "staged"
    train, val, test = toy_data()
    first = search(toy_supermodel(), train, val, test, config=TINY, out=out, stages=["pretrain"])
    assert first.model is None and sorted(os.listdir(out / "checkpoints")) == ["init.pt", "pretrain.pt"]
    search(toy_supermodel(), train, val, test, out=out, resume=True, stages=["policy_train"])
    last = search(toy_supermodel(), train, val, test, out=out, resume=True, stages=["post_train"])
    _assert_same(unbroken, out, last)


def test_a_run_directory_is_not_overwritten(unbroken):
    out, _ = unbroken
    from automtl.errors import ConfigError

    with pytest.raises(ConfigError, match="already holds a run; resume it"):
        _run(out)


_KILLED = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {toy!r})
    from automtl.search import Callback, search
    from search_toy import TINY, toy_data, toy_supermodel

    class Kill(Callback):
        def on_checkpoint(self, stage, step, path):
            if stage == "policy_train" and step == 6:
                os.kill(os.getpid(), signal.SIGKILL)

    train, val, test = toy_data()
    search(toy_supermodel(), train, val, test, config=TINY, out=sys.argv[1], callbacks=[Kill()])
    """
)


@pytest.mark.slow
def test_resume_after_sigkill(unbroken, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(_KILLED.format(toy=os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "run"
    # as many threads as this process: float sums then match the in-process unbroken run
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    done = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    assert os.path.exists(out / "checkpoints" / "policy_train.pt") and not os.path.exists(out / "results.json")
    _assert_same(unbroken, out, _run(out, resume=True))
