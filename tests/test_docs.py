"""The README and the config reference are valid reStructuredText (a malformed table
renders as an error block on every site that shows them)."""

from __future__ import annotations

import io
from pathlib import Path

import docutils.core
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["README.rst", "docs/config.rst"])
def test_the_document_parses_without_warnings(name: str) -> None:
    warnings = io.StringIO()
    docutils.core.publish_doctree((ROOT / name).read_text(), source_path=name,
                                  settings_overrides={"warning_stream": warnings, "report_level": 2,
                                                      "halt_level": 5})
    assert warnings.getvalue() == ""
