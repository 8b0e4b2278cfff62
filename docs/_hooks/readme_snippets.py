"""MkDocs hook: ``--8<-- "README.md:results"`` includes read from the repository root.

pymdownx.snippets resolves its paths against the current directory; this points it at the
folder of ``mkdocs.yml`` instead, so ``mkdocs build -f path/to/mkdocs.yml`` works from
anywhere. The README marks the part the Benchmarks page shows with
``<!-- --8<-- [start:results] -->`` ... ``<!-- --8<-- [end:results] -->``; ``check_paths``
makes a missing file or section fail the build.
"""

from __future__ import annotations

import os

from mkdocs.plugins import event_priority


@event_priority(100)
def on_config(config):
    root = os.path.dirname(os.path.abspath(config.config_file_path))
    options = config.mdx_configs.setdefault("pymdownx.snippets", {})
    options["base_path"] = [root]
    options["check_paths"] = True
    return config
