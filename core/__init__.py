"""Shared infrastructure every package uses: time and China time (`time`), the SQL engine and the
one migration history for every table (`db`, `migrations/`), the MQTT client (`mqtt`) and the
InfluxDB client with its InfluxQL query builder (`influx`). It imports config only; config ← core ←
ingest ← detect ← notify ← center.
"""
