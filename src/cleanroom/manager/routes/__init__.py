"""The manager's HTTP API, one router per resource (docs/api.md, "Tokens" and
"Management server"); each is thin over its service in :mod:`cleanroom.manager`."""
