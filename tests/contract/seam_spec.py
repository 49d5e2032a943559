"""Seam's OpenAPI spec (npm `@seamapi/types`) as response validators for the sandbox's answers.

The package is installed once into `.cache/seam-types/` (as the fake is), and `node` prints its
`openapi` export to a JSON file there once; later sessions read that file. The spec is
OpenAPI 3.0: `nullable` becomes a JSON-Schema `null` alternative, and its `discriminator`s
(which have no `mapping`, so no validator can use them) are dropped; `oneOf` alone decides.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from seam_servers import FakeUnavailable, install_npm, node

TYPES_PACKAGE = "@seamapi/types"
TYPES_VERSION = "1.977.0"
TYPES_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "seam-types"
_TYPES_CJS = Path("node_modules", *TYPES_PACKAGE.split("/"), "dist", "connect.cjs")
_PRINT_SPEC = "process.stdout.write(JSON.stringify(require(process.argv[1]).openapi))"


def load_openapi(cache: Path = TYPES_CACHE, timeout: float = 100.0) -> dict[str, Any]:
    """The spec of `@seamapi/types@TYPES_VERSION`, installed and exported once into `cache`."""
    exported = cache / f"openapi-{TYPES_VERSION}.json"
    if not exported.is_file():
        connect = install_npm(TYPES_PACKAGE, TYPES_VERSION, cache, _TYPES_CJS, timeout)
        done = subprocess.run(
            [node(), "-e", _PRINT_SPEC, str(connect)],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise FakeUnavailable(f"node could not export the spec: {done.stderr[-500:]!r}")
        partial = exported.with_suffix(".tmp")
        partial.write_bytes(done.stdout)
        partial.replace(exported)  # a concurrent session never reads half a file
    spec: dict[str, Any] = json.loads(exported.read_text(encoding="utf-8"))
    return spec


def to_json_schema(node_: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: `nullable` allows null, `discriminator` is dropped."""
    if isinstance(node_, list):
        return [to_json_schema(item) for item in node_]
    if not isinstance(node_, dict):
        return node_
    converted = {
        key: to_json_schema(value)
        for key, value in node_.items()
        if key not in ("discriminator", "nullable")
    }
    if node_.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


class SeamSpec:
    """Validators for the 200 answers of Seam's routes and for its events."""

    def __init__(self, openapi: dict[str, Any]) -> None:
        self.openapi = openapi
        self._components = to_json_schema(openapi["components"])

    def methods(self, route: str) -> set[str]:
        """The HTTP methods the spec gives `route` (upper case)."""
        return {method.upper() for method in self.openapi["paths"][route]}

    def errors(self, route: str, method: str, body: Any) -> list[str]:
        """Why `body` is not a valid 200 answer of `method route` ([] when it is)."""
        operation = self.openapi["paths"][route][method.lower()]
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        return self._errors(to_json_schema(schema), body)

    def event_errors(self, event: Any) -> list[str]:
        """Why `event` is not one of the spec's events ([] when it is)."""
        variants = self.openapi["components"]["schemas"]["event"]["oneOf"]
        event_type = event.get("event_type") if isinstance(event, dict) else None
        for variant in variants:
            if event_type in variant["properties"]["event_type"].get("enum", []):
                return self._errors(to_json_schema(variant), event)
        return [f"event_type {event_type!r} is not in the spec"]

    def _errors(self, schema: dict[str, Any], body: Any) -> list[str]:
        validator = Draft202012Validator({"components": self._components, **schema})
        # best_match descends a failed oneOf into its closest branch, which says why.
        return [_describe(best_match([error])) for error in validator.iter_errors(body)]


def _describe(error: ValidationError | None) -> str:
    if error is None:
        return "(no reason given)"
    where = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return f"{where}: {error.message[:300]}"
