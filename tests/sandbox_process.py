"""`python -m seam_sandbox` as a subprocess on loopback, for tests that need a real TCP server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def serving(scenario: str, directory: Path) -> Iterator[dict[str, Any]]:
    """Serve `scenario` (YAML) on 127.0.0.1, a free port; yield its announcement line."""
    path = directory / "scenario.yaml"
    path.write_text(scenario)
    command = [sys.executable, "-m", "seam_sandbox", "--scenario", str(path)]
    command += ["--host", "127.0.0.1", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            yield json.loads(process.stdout.readline())
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
