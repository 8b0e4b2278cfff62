import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # for `import viz_runs`


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """A finished toy search (SuperModel built in Python) and that SuperModel."""
    from viz_runs import toy_search

    out = str(tmp_path_factory.mktemp("viz") / "run")
    sm = toy_search(out)
    return out, sm


@pytest.fixture(scope="session")
def shown(toy_run):
    """``automtl.viz.show`` on the toy run, with its SuperModel."""
    from automtl.viz import show

    out, sm = toy_run
    return show(out, supermodel=sm)
