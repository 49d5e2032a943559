"""Registered webhooks (`/webhooks/*`): loopback URLs only, each with its own `whsec_` secret."""

from __future__ import annotations

import base64
import ipaddress
import random
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from seam_sandbox.errors import SeamError, invalid_input


@dataclass
class Webhook:
    webhook_id: str
    url: str
    secret: str
    event_types: list[str] = field(default_factory=lambda: ["*"])

    def wants(self, event_type: str) -> bool:
        return "*" in self.event_types or event_type in self.event_types

    def render(self) -> dict[str, Any]:
        return {
            "webhook_id": self.webhook_id,
            "url": self.url,
            "event_types": list(self.event_types),
            "secret": self.secret,
        }


def is_loopback(url: str) -> bool:
    """An http(s) URL whose host is loopback: the only place the sandbox ever sends to."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookRegistry:
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"{seed}:webhooks")
        self._hooks: dict[str, Webhook] = {}

    def create(self, url: str, event_types: list[str] | None) -> Webhook:
        if not is_loopback(url):
            raise invalid_input("url", "The sandbox delivers only to http(s) loopback URLs")
        secret = "whsec_" + base64.b64encode(self._rng.randbytes(24)).decode()
        webhook_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        hook = Webhook(webhook_id, url, secret, list(event_types) if event_types else ["*"])
        self._hooks[webhook_id] = hook
        return hook

    def all(self) -> list[Webhook]:
        return list(self._hooks.values())

    def find(self, webhook_id: str) -> Webhook | None:
        return self._hooks.get(webhook_id)

    def get(self, webhook_id: str) -> Webhook:
        hook = self._hooks.get(webhook_id)
        if hook is None:
            raise SeamError(404, "webhook_not_found", f"Webhook not found: {webhook_id}")
        return hook

    def delete(self, webhook_id: str) -> None:
        self.get(webhook_id)
        del self._hooks[webhook_id]
