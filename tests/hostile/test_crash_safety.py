"""A search run killed at any moment resumes to exactly the result of an unbroken run:

* SIGKILL at random points of a run - including in the middle of a checkpoint write, made
  slow by the ``AUTOMTL_TEST_WRITE_PAUSE`` hook - never leaves a torn file where a reader looks
  (every checkpoint loads), and resuming (killed again, and again) ends with the same
  metrics.jsonl, policy, final weights and results as a run that was never stopped;
* SIGTERM and SIGINT finish the current step, write a checkpoint and stop cleanly (the command
  line exits with 128 + the signal's number); the run resumes from that checkpoint;
* a non-finite loss stops the run naming the task and the step, and keeps the last checkpoint.
"""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F

import automtl
from automtl.errors import RunInterrupted, TrainingError
from automtl.search import Callback, search
from automtl.search.checkpoint import load_checkpoint

from search_toy import TINY, tiny_scenes_yaml, toy_data, toy_supermodel

TOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "search")

_RUN = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {toy!r})
    import torch
    torch.set_num_threads(1)
    from automtl.search import search
    from search_toy import TINY, toy_data, toy_supermodel

    out = sys.argv[1]
    train, val, test = toy_data()
    resume = os.path.exists(os.path.join(out, "config.yaml"))
    search(toy_supermodel(), train, val, test, config=TINY, out=out, resume=resume, progress=False)
    """
)


def _run(out, callbacks=(), resume=False):
    train, val, test = toy_data()
    return search(toy_supermodel(), train, val, test, config=TINY, out=out, callbacks=callbacks, resume=resume)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    return out, _run(out)


def _same_as_unbroken(unbroken, out):
    reference, _ = unbroken
    for name in ("metrics.jsonl", "policy.json", os.path.join("model", "model.json")):
        with open(os.path.join(out, name)) as f, open(os.path.join(reference, name)) as g:
            assert f.read() == g.read(), name
    mine, theirs = (json.load(open(os.path.join(d, "results.json"))) for d in (out, reference))
    mine.pop("seconds"), theirs.pop("seconds")
    assert mine == theirs
    a = torch.load(os.path.join(out, "model", "weights.pt"), weights_only=True)
    b = torch.load(os.path.join(reference, "model", "weights.pt"), weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _no_torn_files(out):
    """Everything a reader (resume) opens is whole: every checkpoint loads, every JSON parses."""
    folder = os.path.join(out, "checkpoints")
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.endswith(".pt") and not name.startswith("."):
            load_checkpoint(os.path.join(folder, name), name[:-3])
    for name in ("run.json", "policy.json", "results.json"):
        if os.path.exists(os.path.join(out, name)):
            json.load(open(os.path.join(out, name)))


def _metrics_lines(out):
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for line in f.read().splitlines() if line.strip()]


def _partial_writes(out):
    found = []
    for folder in (out, os.path.join(out, "checkpoints"), os.path.join(out, "model")):
        if os.path.isdir(folder):
            found += [os.path.join(folder, n) for n in os.listdir(folder) if n.startswith(".tmp-")]
    return found


@pytest.mark.slow
def test_sigkill_at_random_points_and_during_a_checkpoint_write(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_RUN.format(toy=TOY))
    out = str(tmp_path / "run")
    env = dict(os.environ, AUTOMTL_TEST_WRITE_PAUSE="0.1", OMP_NUM_THREADS="1")
    # the reference runs in a process like the killed ones: same thread count, so same float sums
    reference = tmp_path / "reference"
    unbroken = subprocess.run([sys.executable, str(script), str(reference)], env={**env, "AUTOMTL_TEST_WRITE_PAUSE": "0"},
                              capture_output=True, text=True, timeout=600)
    assert unbroken.returncode == 0, unbroken.stderr
    total = len(_metrics_lines(str(reference)))
    rng = random.Random(2)
    kills = []
    for attempt in range(2):
        # the first run pauses long in every write, so that the kill surely lands inside one
        pause = {"AUTOMTL_TEST_WRITE_PAUSE": "1"} if attempt == 0 else {}
        process = subprocess.Popen([sys.executable, str(script), out], env={**env, **pause}, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        if attempt == 0:  # wait for a checkpoint write to be under way, then kill it mid-write
            while not any(p.endswith(".pt") for p in _partial_writes(out)) and time.time() < deadline:
                time.sleep(0.005)
            torn = [p for p in _partial_writes(out) if p.endswith(".pt")]
        else:
            # the resumed run is killed at a random point of its training: once it has logged 1 to 3
            # lines past what the first run left (a resume only ever cuts the log back), well before
            # the end of the run
            target = len(_metrics_lines(out)) + rng.randint(1, 3)
            assert target <= total - 3, (target, total)
            while len(_metrics_lines(out)) < target and process.poll() is None and time.time() < deadline:
                time.sleep(0.005)
        assert process.poll() is None, process.stderr.read().decode()  # the kill hits a running process
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        kills.append(process.returncode)
        if attempt == 0:
            assert torn and all(os.path.exists(p) for p in torn)  # the half-written file is there ...
        _no_torn_files(out)  # ... but nothing a reader opens is torn
        assert not os.path.exists(os.path.join(out, "results.json"))  # killed before the run could finish
    assert kills == [-signal.SIGKILL, -signal.SIGKILL]
    done = subprocess.run([sys.executable, str(script), out], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _partial_writes(out) == []  # a resumed run clears what killed writes left
    _same_as_unbroken((reference, None), out)


class SendSignal(Callback):
    def __init__(self, stage, step, signum):
        self.stage, self.step, self.signum = stage, step, signum

    def on_log(self, record):
        if (record["stage"], record["step"], record["kind"]) == (self.stage, self.step, "train"):
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_write_a_checkpoint_and_stop(unbroken, tmp_path, signum):
    out = tmp_path / "run"
    previous = signal.getsignal(signum)
    with pytest.raises(RunInterrupted) as info:
        _run(out, [SendSignal("policy_train", 6, signum)])  # arrives while step 6 is logged: acted on after step 7
    assert signal.getsignal(signum) is previous  # the handlers are restored
    name = signal.Signals(signum).name
    path = out / "checkpoints" / "policy_train.pt"
    assert str(info.value) == (
        f"policy_train: stopped by {name} after step 7 of 10; its checkpoint is written ({path}); resume with "
        f"`automtl search --resume {out}` or automtl.search(..., out='{out}', resume=True)"
    )
    assert info.value.signal == signum
    state = load_checkpoint(str(path), "policy_train")
    assert (state["step"], state["done"]) == (7, False)
    _run(out, resume=True)
    _same_as_unbroken(unbroken, out)


def test_a_second_sigint_interrupts_at_once(tmp_path):
    class Twice(Callback):
        def on_log(self, record):
            if record["stage"] == "pretrain":
                # two presses of Ctrl-C, as a person makes them: the first one's handler has
                # run before the second arrives (two signals pending at once are one signal)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "run", [Twice()])


_TINY_CLI = tiny_scenes_yaml(
    data={"eval_batch_size": None},
    pretrain={"steps": 30},
    policy_train={"steps": 2},
    logging={"log_every": 1, "checkpoint_every": 1000, "progress": False},
    baselines={"single_task": False, "multi_task": False},
)

_CLI = [sys.executable, "-c", "import sys; from automtl.cli import main; sys.exit(main())", "search"]


@pytest.mark.slow
def test_the_command_line_exits_cleanly_on_sigterm_and_resumes(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(_TINY_CLI)
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(_CLI + ["--config", str(config), "--out", str(out), "--quiet"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2) and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    state = load_checkpoint(str(out / "checkpoints" / "pretrain.pt"), "pretrain")
    step = state["step"]
    assert not state["done"] and 2 <= step < 30
    assert err.strip().splitlines()[-1] == (
        f"automtl search: pretrain: stopped by SIGTERM after step {step} of 30; its checkpoint is written "
        f"({out / 'checkpoints' / 'pretrain.pt'}); resume with `automtl search --resume {out}` or "
        f"automtl.search(..., out='{out}', resume=True)"
    )
    assert not (out / "results.json").exists()
    done = subprocess.run(_CLI + ["--resume", str(out), "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(str(out / "checkpoints" / "pretrain.pt"), "pretrain")["step"] == 30
    assert json.load(open(out / "results.json"))["method"] == "automtl"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r["step"] for r in records if (r["stage"], r["kind"]) == ("pretrain", "train")]
    assert steps == list(range(1, 31))  # every step logged once: nothing lost, nothing repeated


def test_a_non_finite_loss_names_the_task_and_step_and_keeps_the_last_checkpoint(tmp_path):
    sm = toy_supermodel()
    state = {"explode": False}

    class Explode(Callback):
        def on_checkpoint(self, stage, step, path):
            if (stage, step) == ("policy_train", 3):
                state["explode"] = True  # step 4 is a weight step (2 weight steps, 1 policy step)

    def exploding(prediction, target):
        return F.cross_entropy(prediction, target) * (float("inf") if state["explode"] else 1.0)

    sm.tasks[0].loss = exploding
    train, val, _ = toy_data()
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        automtl.search(sm, train, val, config=TINY, out=out, callbacks=[Explode()], progress=False)
    path = out / "checkpoints" / "policy_train.pt"
    assert str(info.value) == (
        f"policy_train, step 4: the loss of task 'a' is inf; training stopped and the checkpoint of step 3 is kept "
        f"({path}). Lower the learning rate, check this task's data and loss, or turn mixed precision off; then "
        "resume the run"
    )
    kept = load_checkpoint(str(path), "policy_train")
    assert (kept["step"], kept["done"]) == (3, False)
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
