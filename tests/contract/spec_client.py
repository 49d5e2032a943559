"""A client for the sandbox that holds every answer against Seam's OpenAPI spec."""

from __future__ import annotations

from typing import Any

import httpx
from seam_spec import SeamSpec

from seam_sandbox import Sandbox


class SpecClient:
    """Calls sandbox routes over ASGITransport; every 200 answer must match the spec."""

    def __init__(self, sandbox: Sandbox, spec: SeamSpec) -> None:
        self.sandbox, self.spec = sandbox, spec
        self.checked: list[str] = []  # "METHOD route" of every answer validated
        self._http = httpx.AsyncClient(
            base_url="http://sandbox",
            transport=httpx.ASGITransport(app=sandbox.app),
            headers={"Authorization": f"Bearer {sandbox.api_key}"},
        )

    async def call(self, route: str, method: str = "POST", **params: Any) -> dict[str, Any]:
        """The answer to `method route` with `params`, after checking it against the spec."""
        if method == "GET":
            answer = await self._http.get(route, params=params)
        else:
            answer = await self._http.request(method, route, json=params)
        assert answer.status_code == 200, f"{method} {route}: {answer.status_code} {answer.text}"
        body: dict[str, Any] = answer.json()
        problems = self.spec.errors(route, method, body)
        assert not problems, f"{method} {route} answer breaks the spec:\n" + "\n".join(problems)
        self.checked.append(f"{method} {route}")
        return body

    def advance(self, seconds: float) -> None:
        self.sandbox.clock.advance(seconds)

    async def aclose(self) -> None:
        await self._http.aclose()
