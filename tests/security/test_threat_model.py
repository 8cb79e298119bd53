"""docs/security.md stays true: every test it names as a proof exists, in the file it names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "security.md").read_text()


def test_every_test_the_threat_model_names_exists():
    defined = {name for path in (ROOT / "tests").rglob("test_*.py")
               for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M)}
    files = set(re.findall(r"(test_[a-z0-9_]+)\.py", DOC))  # checked below
    named = set(re.findall(r"(?<![\w…])(test_[a-z0-9_]+)(?![\w…])", DOC)) - files

    assert named and named <= defined, sorted(named - defined)


def test_every_file_the_threat_model_names_exists():
    paths = set(re.findall(r"`((?:tests|adsync|tracking|config)/[\w/]+\.py)", DOC))

    assert paths and [p for p in sorted(paths) if not (ROOT / p).exists()] == []
