"""The HTTP API: track calls, read them, health, metrics, and Ultravox's own webhooks.

Off unless ``[api] listen`` is set; then ``server.ApiServer`` runs ``app.ApiApp`` inside the
daemon's task group. docs/api.md describes every route; docs/openapi.json is the contract (the
package ships it as ``worker/api/openapi.json``, a link to that file).
"""
