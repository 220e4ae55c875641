-- Rejected events, as read back from the dead-letter topic by the worker. Keyed by their position
-- in that topic, so re-reading it after a restart replaces instead of duplicating.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    dlq_partition UInt16,
    dlq_offset UInt64,
    reason String,
    detail String,
    agency String,
    source String,
    origin String,
    received_at DateTime,
    payload String,
    payload_encoding String
)
ENGINE = ReplacingMergeTree
ORDER BY (dlq_partition, dlq_offset);

-- Agency bearer tokens for the HTTP gateway, stored as SHA-256 only (tokens are 256-bit random,
-- so a fast hash is enough). The latest row per (agency, token) by updated_at decides revocation.
CREATE TABLE IF NOT EXISTS {db}.agency_tokens
(
    agency String,
    token_sha256 String,
    revoked UInt8,
    updated_at DateTime
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (agency, token_sha256);
