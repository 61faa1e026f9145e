-- Issue 14: retention of the consumed Kafka messages' records (KAFKA_MESSAGES_RETENTION_DAYS) finds the oldest
-- by arrival, without a scan of the whole table.
CREATE INDEX IF NOT EXISTS kafka_messages_received_idx ON kafka_messages (received_at);
