"""Persistence: the store contract (``base``), its errors and the one way to open a store.

``open_store``/``open_configured`` (``factory``) pick the backend from ``[worker] database``.
"""
