"""The other files a user hands automtl - policy JSON and config YAML/mappings - fuzzed with
hypothesis: a random JSON value put anywhere in a valid document gives a valid result or an
automtl error with a message, never a raw ``TypeError``/``KeyError``."""

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automtl import Policy
from automtl.errors import AutoMTLError, PolicyError
from automtl.search.config import SearchConfig, load_config

from search_toy import toy_supermodel

EXAMPLES = int(os.environ.get("AUTOMTL_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(max_examples=EXAMPLES or 200, deadline=2000, derandomize=not EXAMPLES, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)

SM = toy_supermodel()
POLICY = Policy.all_shared(SM).to_dict()
CONFIG = SearchConfig().to_dict()


def _paths(document, prefix=()):
    for key, value in document.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from _paths(value, prefix + (key,))


def _replaced(document, path, value):
    copy = json.loads(json.dumps(document))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def _only_automtl_errors(fn):
    try:
        fn()
    except AutoMTLError as exc:
        assert str(exc).strip()


@SETTINGS
@given(st.sampled_from(list(_paths(POLICY))), JSON)
def test_policy_documents(path, value):
    _only_automtl_errors(lambda: Policy.from_dict(SM, _replaced(POLICY, path, value)))


@SETTINGS
@given(st.sampled_from(list(_paths(CONFIG))), JSON, st.booleans())
def test_config_documents_and_overrides(path, value, as_override):
    if as_override:
        _only_automtl_errors(lambda: load_config({}, [".".join(path) + "=" + json.dumps(value)]))
    else:
        _only_automtl_errors(lambda: load_config(_replaced(CONFIG, path, value)))


def test_a_task_entry_that_is_not_a_mapping():  # was: TypeError
    with pytest.raises(PolicyError) as info:
        Policy.from_dict(SM, _replaced(POLICY, ("tasks", "b"), None))
    assert str(info.value) == "the policy's entry for task 'b' must map nodes to options, got NoneType"
