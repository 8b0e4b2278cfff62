"""Two CPU processes under torchrun (gloo): the run completes, and the ranks agree on the
policy, the logits and the final weights."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    sys.path.insert(0, {toy!r})
    from automtl.search import search
    from search_toy import TINY, toy_data, toy_supermodel

    out = sys.argv[1]
    train, val, test = toy_data()
    result = search(toy_supermodel(), train, val, test, config=TINY, out=out)
    torch.save(
        {{
            "world": int(os.environ["WORLD_SIZE"]),
            "policy": result.policy.to_dict(),
            "logits": [p.detach().clone() for p in result.supermodel.arch_parameters()],
            "weights": {{k: v.detach().clone() for k, v in result.model.state_dict().items()}},
            "metrics": result.metrics,
        }},
        os.path.join(out, "rank%s.pt" % os.environ["RANK"]),
    )
    """
)


@pytest.mark.slow
def test_two_gloo_processes_agree_on_the_policy(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(_SCRIPT.format(toy=os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert os.path.isfile(out / "results.json") and os.path.isfile(out / "model" / "weights.pt")
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert ranks[0]["policy"] == ranks[1]["policy"]
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["logits"], ranks[1]["logits"]))
    assert any(a.abs().sum() > 0 for a in ranks[0]["logits"])  # the policy was trained
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
