"""API plumbing shared by every area: errors, pagination, body limits and
parsing, OpenAPI, dependencies, redaction, shared resource shapes, the API
process's settings and connection pool, request metrics."""
