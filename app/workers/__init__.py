"""The workers area (/api/v1/workers): routes.py is HTTP only, service.py the
database calls, schemas.py the response bodies."""
