"""Examples: DAG files, a handlers module, a cron schedule, and SQL enqueueing."""
