"""Kafka and Faust plumbing for AlphaPulse: settings, records, topics, codecs, broker, CLI."""
