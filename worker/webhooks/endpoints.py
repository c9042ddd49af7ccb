"""Who gets which event, and how: the configured endpoints plus each call's ``--webhook`` URL.

A per-call URL is delivered like the first ``[[webhooks]]`` endpoint (its retry schedule,
timeout and concurrency) and signed with ``[call_webhooks]``'s secret when one is set, else
with that endpoint's first secret (CONTRACT.md). A separate secret means a per-call receiver
cannot forge events to the configured endpoints. Without any secret to sign with, such
deliveries are dead at once, with that reason, and ``callwatch replay --dead`` sends them once
one is configured. All per-call URLs together share ``[call_webhooks] max_in_flight``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.config import Config, WebhookConfig
from worker.urls import safe_url
from worker.webhooks.base import Route
from worker.webhooks.signing import secret_key

UNSIGNABLE = ("cannot sign: neither [call_webhooks] nor a [[webhooks]] endpoint has a secret")
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
        own = config.call_webhooks.secret
        if own is not None:  # the per-call settings of the first endpoint, with our own secret
            base = first or WebhookConfig(url="", secrets=(own,))
            self._per_call: Endpoint | None = _endpoint(
                WebhookConfig(url="", secrets=(own,), retry_schedule=base.retry_schedule,
                              timeout=base.timeout, max_in_flight=base.max_in_flight),
                "", default, all_keys=False)
        else:
            self._per_call = _endpoint(first, "", default, all_keys=False) if first else None
        self.per_call_limit = self._per_call.max_in_flight if self._per_call else default
        self.policy = config.call_webhooks
        self.per_call_budget = config.call_webhooks.max_in_flight

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

    def shared(self, url: str) -> bool:
        """Whether ``url`` is a per-call URL (not configured): it shares the per-call budget."""
        return url not in self.configured

    def limit(self, url: str) -> int:
        hook = self.configured.get(url)
        return hook.max_in_flight if hook is not None else self.per_call_limit

    @property
    def longest_timeout(self) -> float:
        timeouts = [hook.timeout for hook in self.configured.values()]
        if self._per_call is not None:
            timeouts.append(self._per_call.timeout)
        return max(timeouts, default=15.0)

    @property
    def senders(self) -> int:
        """How many attempts may be under way at once: every endpoint's limit, plus the
        per-call budget. With that many senders no endpoint ever waits for a free one."""
        return sum(hook.max_in_flight for hook in self.configured.values()) + \
            self.per_call_budget


def _endpoint(hook: WebhookConfig, url: str, default_limit: int, *, all_keys: bool) -> Endpoint:
    secrets = hook.secrets if all_keys else hook.secrets[:1]
    return Endpoint(url=url, keys=tuple(secret_key(s) for s in secrets), events=hook.events,
                    retry_schedule=hook.retry_schedule, timeout=hook.timeout,
                    max_in_flight=hook.max_in_flight or default_limit)
