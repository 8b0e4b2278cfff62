"""Coverage-guided fuzz targets (atheris, libFuzzer's engine) for the two front ends.

    python fuzz/targets.py TARGET [libFuzzer flags...] [CORPUS_DIR | INPUT_FILE]

Targets:

* ``prototxt``: the bytes are prototxt text; seeded with the real Caffe files of the corpus
  (``tests/corpus`` and what ``../shared`` or ``$AUTOMTL_CORPUS`` add; ``fuzz/run.py`` copies them into the working folder), mutated byte by byte with a
  dictionary of the schema's words;
* ``prototxt_gen``: the bytes steer :func:`netgen.prototxt_net` (structured random nets);
* ``cnn``: the bytes steer :func:`netgen.cnn_spec` (random CNNs for the torch.fx front end).

Every input goes through :mod:`properties`; a :class:`properties.Finding` (or any other
exception escaping the checks) is a crash that libFuzzer saves as ``crash-*`` for
``fuzz/run.py --reproduce``. Use ``fuzz/run.py`` rather than this file: it sets the time
limits and the seed corpus.
"""

from __future__ import annotations

import os
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

with atheris.instrument_imports(include=["automtl", "google.protobuf.text_format"]):
    import torch

    import automtl  # noqa: F401 - instrumented for coverage
    from automtl.compiler.prototxt import limits

    import netgen
    import properties

#: The fuzzer lowers the net-size limit so that every input stays cheap: the limit checks are
#: the same code, they just trip sooner (big seed nets are refused part way instead of built).
limits.MAX_NET_PARAMETERS = 2**24


def prototxt(data: bytes) -> None:
    properties.check_prototxt(data.decode("utf-8", "replace"))


def prototxt_gen(data: bytes) -> None:
    source = netgen.ProviderSource(atheris.FuzzedDataProvider(data))
    properties.check_prototxt(netgen.prototxt_net(source))


def cnn(data: bytes) -> None:
    source = netgen.ProviderSource(atheris.FuzzedDataProvider(data))
    properties.check_cnn(netgen.cnn_spec(source))


TARGETS = {"prototxt": prototxt, "prototxt_gen": prototxt_gen, "cnn": cnn}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags] [corpus or input]")
    target = TARGETS[sys.argv.pop(1)]
    torch.set_num_threads(1)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
