"""griffe extension: Sphinx roles in docstrings read as code.

automtl's docstrings cross-reference with Sphinx roles (``:func:`automtl.search```,
``:class:`~automtl.policy.Policy```), which Markdown would print as they are written. This
extension rewrites each to a code span of its target (``~`` keeps the last name only, as in
Sphinx), before mkdocstrings renders the docstring.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")


def plain_roles(text: str) -> str:
    """``text`` with every Sphinx role replaced by a Markdown code span."""

    def code(match: "re.Match[str]") -> str:
        target = match.group(2).strip()
        if match.group(1):
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"

    return _ROLE.sub(code, text)


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
