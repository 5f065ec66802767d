"""Development tools, not part of the running system: the simulated city (`simulate`), local
Mosquitto/influxd (`devservices`) and PostgreSQL (`pgservice`) started in a directory of their own.

Used by `envwatch simulate/replay/dev-up/dev-down/demo`, the tests and bench/; nothing under
config/, ingest/, detect/, notify/ or core/ imports it.
"""
