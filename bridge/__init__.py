"""The Kafka bridge: alerts and schedules in (consumer), outcomes out (outbox relay), one producer."""
