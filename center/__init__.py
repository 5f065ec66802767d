"""The monitoring center: the CLI `envwatch`, the HTTP service (API, live events, metrics, health, the
board) and the wiring of the packages into one service.

An endpoint is one router (`api_*.py`) that checks the caller (`auth`, `guard`) and calls a package's
façade: `notify.queries` to read cases, tickets and notices, `notify.workflow` to change them,
`detect.queries` / `detect.readings` for alerts and readings. center writes no SQL over the packages'
tables and no InfluxQL: a read the façade lacks is added to its owner.
"""
