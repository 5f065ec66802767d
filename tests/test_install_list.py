"""The README's install list is the Makefile's APT_PACKAGES: an installer reading one gets the other."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def makefile_packages() -> list[str]:
    m = re.search(r"^APT_PACKAGES\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    assert m, "Makefile has no APT_PACKAGES"
    return m.group(1).split()


def readme_packages() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"`apt-get install` of\s+`([^`]+)`", text)
    assert m, "README.md has no install list (`apt-get install` of `...`)"
    return m.group(1).split()


def test_readme_install_list_equals_makefile_apt_packages() -> None:
    assert readme_packages() == makefile_packages()
