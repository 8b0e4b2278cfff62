"""automtl.registry.Registry: register (call and decorator), aliases, lookup errors."""

import pytest

from automtl.errors import ConfigError
from automtl.registry import Registry, did_you_mean


def test_register_get_aliases_and_order():
    reg = Registry("widget")
    reg.register("alpha", 1, aliases=("a",))

    @reg.register("beta")
    def beta():
        return 2

    assert reg.names() == ["alpha", "beta"] and list(reg) == ["alpha", "beta"] and len(reg) == 2
    assert reg.get("a") == 1 and reg["alpha"] == 1 and reg.get("beta") is beta
    assert "a" in reg and "alpha" in reg and "gamma" not in reg
    assert reg.canonical("a") == "alpha" and reg.aliases == {"a": "alpha"}
    assert reg.items() == [("alpha", 1), ("beta", beta)]


def test_unknown_name_says_did_you_mean_and_lists_names():
    reg = Registry("widget", listing="the widgets are")
    reg.register("alpha", 1)
    reg.register("beta", 2, aliases=("second",))
    with pytest.raises(ConfigError) as info:
        reg.get("alpah")
    assert str(info.value) == "unknown widget 'alpah' (did you mean 'alpha'?); the widgets are: alpha, beta"
    with pytest.raises(ConfigError) as info:
        reg["zzz"]
    assert str(info.value) == "unknown widget 'zzz'; the widgets are: alpha, beta"
    err = reg.unknown("secnd", where="spec 'x'", what="thing")
    assert str(err) == "spec 'x': unknown thing 'secnd' (did you mean 'second'?); the widgets are: alpha, beta"


def test_duplicate_names_are_refused():
    reg = Registry("widget")
    reg.register("alpha", 1, aliases=("a",))
    with pytest.raises(ConfigError, match="widget registry: 'alpha' is registered already"):
        reg.register("alpha", 2)
    with pytest.raises(ConfigError, match="widget registry: 'a' is registered already"):
        reg.register("other", 2, aliases=("a",))
    assert reg.get("alpha") == 1


def test_did_you_mean():
    assert did_you_mean("uncertainity", ["equal", "uncertainty"]) == " (did you mean 'uncertainty'?)"
    assert did_you_mean("xyz", ["equal"]) == ""
