"""Webhook delivery: the outbox relay, Standard Webhooks signing and the retry policy.

    store (events) --fan_out--> deliveries --claim--> slots --> sign + POST --record--> store
                                  ^                                            |
                                  +-------- retry at T / dead / 410 -----------+

``policy`` (pure decisions), ``signing`` (pure), ``endpoints`` (config -> who gets what),
``transport`` (one bounded HTTP attempt), ``pools`` (a connection pool per endpoint),
``guarded`` (per-call URLs: resolve, check, connect to the checked address),
``slots`` (per-endpoint queues and limits, one shared budget for per-call URLs),
``relay`` (the daemon component), ``commands`` (the ``deliveries`` and ``replay`` CLI
commands and the delivery parts of ``status``), ``base`` (the store seam they share).
"""
