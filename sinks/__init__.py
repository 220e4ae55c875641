"""ClickHouse: the schema (versioned migrations), the batch writer and the queries everyone reads."""
