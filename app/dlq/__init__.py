"""The dead-letter queue area (/api/v1/dlq): routes.py is HTTP only, service.py the
rules and database calls, schemas.py the response bodies."""
