"""The wire contract (settings, records, codec, schemas, topics), the Kafka runtime, the broker
and MLflow launchers, and the PostgreSQL store."""
