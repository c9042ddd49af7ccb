"""Who gets which event, and how: the configured endpoints plus each call's ``--webhook`` URL.

A per-call URL is delivered like the first ``[[webhooks]]`` endpoint (its retry schedule,
timeout and concurrency) and signed with that endpoint's first secret (CONTRACT.md). Without
any configured endpoint there is no secret to sign with: such deliveries are dead at once,
with that reason, and ``callwatch replay --dead`` sends them once a webhook is configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.config import Config, WebhookConfig
from worker.urls import safe_url
from worker.webhooks.base import Route
from worker.webhooks.signing import secret_key

UNSIGNABLE = "cannot sign: no [[webhooks]] endpoint is configured, so there is no secret"
__all__ = ["Endpoint", "Endpoints", "safe_url"]

UNCONFIGURED = "the endpoint is no longer configured"


@dataclass(frozen=True, kw_only=True, slots=True)
class Endpoint:
    """Everything the relay needs to send to one URL. The keys never appear in a repr."""

    url: str
    keys: tuple[bytes, ...] = field(repr=False)
    events: frozenset[str] | None
    retry_schedule: tuple[float, ...]
    timeout: float
    max_in_flight: int

    def wants(self, event_type: str) -> bool:
        return self.events is None or event_type in self.events


class Endpoints:
    """The endpoints of one configuration (rebuilt on SIGHUP)."""

    def __init__(self, config: Config) -> None:
        default = config.delivery.max_in_flight_per_endpoint
        self.configured = {hook.url: _endpoint(hook, hook.url, default, all_keys=True)
                           for hook in config.webhooks}
        first = config.webhooks[0] if config.webhooks else None
        self._per_call = _endpoint(first, "", default, all_keys=False) if first else None
        self.per_call_limit = self._per_call.max_in_flight if self._per_call else default

    def route(self, event_type: str, call_webhook: str | None) -> list[Route]:
        """Where an event goes: every configured endpoint whose filter takes it, and the
        call's own URL (which takes every event)."""
        routes = [Route(endpoint=url) for url, hook in self.configured.items()
                  if hook.wants(event_type)]
        if call_webhook is not None and call_webhook not in self.configured:
            reason = None if self._per_call is not None else UNSIGNABLE
            routes.append(Route(endpoint=call_webhook, dead_reason=reason))
        return routes

    def get(self, url: str, *, per_call: bool) -> Endpoint | str:
        """The settings for ``url``, or why it cannot be sent."""
        if (hook := self.configured.get(url)) is not None:
            return hook
        if not per_call:
            return UNCONFIGURED
        if self._per_call is None:
            return UNSIGNABLE
        return Endpoint(url=url, keys=self._per_call.keys, events=None,
                        retry_schedule=self._per_call.retry_schedule,
                        timeout=self._per_call.timeout, max_in_flight=self._per_call.max_in_flight)

    def limit(self, url: str) -> int:
        hook = self.configured.get(url)
        return hook.max_in_flight if hook is not None else self.per_call_limit

    @property
    def longest_timeout(self) -> float:
        return max((hook.timeout for hook in self.configured.values()), default=15.0)


def _endpoint(hook: WebhookConfig, url: str, default_limit: int, *, all_keys: bool) -> Endpoint:
    secrets = hook.secrets if all_keys else hook.secrets[:1]
    return Endpoint(url=url, keys=tuple(secret_key(s) for s in secrets), events=hook.events,
                    retry_schedule=hook.retry_schedule, timeout=hook.timeout,
                    max_in_flight=hook.max_in_flight or default_limit)
