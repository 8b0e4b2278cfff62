"""keep_freed_memory: after it, a 256 MiB tensor made and freed again and again reuses the same
memory without page faults; before it, glibc maps fresh pages for each one. Each case runs in
a fresh interpreter: the setting is process-wide. Also the fast path's CPU stack limit, which
keep_freed_memory lifts."""

import json
import subprocess
import sys
import textwrap

import pytest

from automtl.errors import ConfigError
from automtl.fastpath import DEFAULT_CPU_STACK_LIMIT, cpu_stack_limit, keep_freed_memory, set_cpu_stack_limit

_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from automtl.fastpath import cpu_stack_limit, keep_freed_memory

    limit_before = cpu_stack_limit()
    kept = keep_freed_memory() if sys.argv[1] == "kept" else None
    faults = []
    for _ in range(6):  # a training loop's pattern: the same large tensor made and freed again
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.ones(64 * 2**20)  # 256 MiB: 65,536 pages
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        del x
    print(json.dumps({"kept": kept, "faults": faults, "limits": [limit_before, cpu_stack_limit()]}))
    """
)


def _probe(mode):
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_freed_memory_is_kept_and_reused():
    default, kept = _probe("default"), _probe("kept")
    assert default["kept"] is None and all(f > 60000 for f in default["faults"])  # every round: fresh pages
    assert kept["kept"] is True
    assert all(f < 1000 for f in kept["faults"][-3:])  # once the heap holds the block: no page faults
    # large stacked tensors cost nothing extra once memory is kept: the fast path's limit goes
    assert default["limits"] == [DEFAULT_CPU_STACK_LIMIT] * 2 and kept["limits"] == [DEFAULT_CPU_STACK_LIMIT, None]


def test_pad_must_be_a_byte_count():
    with pytest.raises(ConfigError, match=r"^keep_freed_memory: pad_bytes must be an int in \[0, 2\*\*31\) bytes, got -1$"):
        keep_freed_memory(-1)
    with pytest.raises(ConfigError, match="got True"):
        keep_freed_memory(True)


def test_stack_limit_must_be_a_byte_count_or_none():
    before = cpu_stack_limit()
    try:
        for bad in (-1, 2.5, True, "8M"):
            with pytest.raises(ConfigError, match=r"^set_cpu_stack_limit: the limit must be a byte count \(an int >= 0\) or None, got "):
                set_cpu_stack_limit(bad)
        assert cpu_stack_limit() == before  # a refused value changes nothing
        set_cpu_stack_limit(None)
        assert cpu_stack_limit() is None
        set_cpu_stack_limit(1 << 20)
        assert cpu_stack_limit() == 1 << 20
    finally:
        set_cpu_stack_limit(before)
