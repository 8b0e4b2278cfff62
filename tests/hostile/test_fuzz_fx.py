"""Property-based fuzzing of the torch.fx front end (hypothesis): small random CNNs (random
depths, channels, branches joined by add or concatenation, residual blocks, strides, groups,
dilations, transposed convolutions, norms, pooling, linear heads). Every one either compiles
and passes the equivalence check - the all-shared and all-own models, derived and as the
SuperModel in fixed mode, compute exactly what the net computes for every task - or is
refused with an automtl error; a net that runs is refused only when there is nothing to
search or it computes on empty tensors (see fuzz/properties.py)."""

import collections
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netgen import DrawSource, RandomCNN, RandomSource, cnn_spec
from properties import check_cnn

EXAMPLES = int(os.environ.get("AUTOMTL_FUZZ_EXAMPLES", "0"))


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES or 120,
    deadline=5000,
    derandomize=not EXAMPLES,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_random_cnns(data):
    check_cnn(cnn_spec(DrawSource(data.draw)))


def test_the_generator_makes_valid_and_broken_nets():
    """Over 60 random CNNs, most compile and pass the equivalence check, and some do not run
    at all (so the refusal path is exercised too)."""
    src = RandomSource(random.Random(1))
    outcomes = collections.Counter(check_cnn(cnn_spec(src)) for _ in range(60))
    assert outcomes["compiled"] >= 25, outcomes
    assert outcomes["refused: does not run"] >= 5, outcomes


def test_a_spec_builds_the_net_it_describes():
    spec = {
        "channels": 2, "size": 8, "head": "linear", "classes": 3, "final": 4,
        "blocks": [
            {"kind": "conv", "in": 2, "out": 4, "kernel": 3, "stride": 2, "padding": 1, "dilation": 1, "groups": 2, "bias": False, "transposed": False},
            {"kind": "residual", "conv": {"kind": "conv", "in": 4, "out": 4, "kernel": 3, "stride": 1, "padding": 2, "dilation": 2, "groups": 1, "bias": True, "transposed": False}},
            {"kind": "act", "type": "relu"},
        ],
    }
    net = RandomCNN(spec)
    first = net.body[0]
    assert (first.in_channels, first.out_channels, first.stride, first.groups, first.bias) == (2, 4, (2, 2), 2, None)
    assert net.body[1].conv.dilation == (2, 2)
    assert check_cnn(spec) == "compiled"
