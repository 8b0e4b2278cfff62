import os
import shutil
import sys

import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
# the search tests' toy problem and tiny configs (search_toy), shared by every test folder
sys.path.insert(0, os.path.join(_TESTS, "search"))
# helpers shared by the test folders: prototxt_corpus (where the real prototxt files are),
# copies (per-task copies made distinct for the equivalence checks)
sys.path.insert(0, _TESTS)

#: set (to 1) where a browser must be there: CI (.ci/run) sets it so that the browser tests
#: never go unnoticed as skipped
REQUIRE_BROWSER = "AUTOMTL_REQUIRE_BROWSER"


@pytest.fixture(scope="session")
def chromium_binary():
    """The ``chromium`` the browser tests run; without one they skip, unless
    ``$AUTOMTL_REQUIRE_BROWSER`` is set, which makes its absence a failure."""
    path = shutil.which("chromium")
    if path is None:
        reason = "no `chromium` on PATH (the browser tests render report.html in headless Chromium; .ci/run installs it)"
        if os.environ.get(REQUIRE_BROWSER, "") not in ("", "0"):
            pytest.fail(f"{reason}, and {REQUIRE_BROWSER} is set", pytrace=False)
        pytest.skip(reason)
    return path
