"""Property-based fuzzing of the prototxt front end (hypothesis): random nets, mutated real
Caffe files and random text. Whatever comes in, the only exceptions out are automtl errors
with a message; a net that builds runs at its declared input with the shapes the front end
computed; a compiled net's all-shared and all-own models compute what the net computes (see
fuzz/properties.py). ``AUTOMTL_FUZZ_EXAMPLES`` raises the number of examples for a long run.

The coverage-guided counterpart is ``python fuzz/run.py --seconds 60`` (atheris)."""

import collections
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netgen import DrawSource, RandomSource, mutate_text, prototxt_net
from properties import check_prototxt
from prototxt_corpus import corpus_files

EXAMPLES = int(os.environ.get("AUTOMTL_FUZZ_EXAMPLES", "0"))


def fuzz_settings(examples: int):
    return settings(
        max_examples=EXAMPLES or examples,
        deadline=5000,  # ms per example: bounded time per input
        derandomize=not EXAMPLES,  # the suite sees the same examples every run; a long run explores
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


def _seed_files(max_bytes: int = 12000):
    """The small real files (tests/corpus and whatever a corpus adds): the mutation seeds."""
    return [path for path in corpus_files().values() if os.path.getsize(path) <= max_bytes]


SEEDS = {os.path.basename(p): open(p, encoding="utf-8").read() for p in _seed_files()}


@pytest.mark.slow
@fuzz_settings(200)
@given(st.data())
def test_random_nets(cheap_limits, data):
    check_prototxt(prototxt_net(DrawSource(data.draw)))


@pytest.mark.slow
@fuzz_settings(120)
@given(st.sampled_from(sorted(SEEDS)), st.integers(1, 5), st.data())
def test_mutated_real_files(cheap_limits, name, edits, data):
    check_prototxt(mutate_text(DrawSource(data.draw), SEEDS[name], edits))


@fuzz_settings(200)
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("utf-8", "replace"))))
def test_random_text(text):
    outcome = check_prototxt(text)
    assert outcome.startswith("refused") or outcome in ("built", "ran", "compiled")


def test_the_generator_makes_nets_that_compile_and_nets_that_are_refused(cheap_limits):
    """The random nets are not all rejected at the first hurdle: over 300 of them some compile
    (and pass the equivalence check) and many distinct errors are raised."""
    src = RandomSource(random.Random(0))
    outcomes = collections.Counter(check_prototxt(prototxt_net(src)) for _ in range(300))
    refusals = {o for o in outcomes if o.startswith("refused:")}
    assert outcomes["compiled"] >= 20, outcomes
    assert {"refused: InvalidLayerError", "refused: ShapeMismatchError", "refused: MissingBottomError",
            "refused: UnsupportedLayerError", "refused: MissingInputShapeError"} <= refusals, outcomes


def test_the_seed_files_are_the_real_corpus():
    assert {"bvlc_lenet.prototxt", "bvlc_cifar10_quick.prototxt", "bvlc_alexnet_deploy.prototxt"} <= set(SEEDS)
