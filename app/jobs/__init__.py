"""The jobs area (/api/v1/jobs): routes.py is HTTP only, service.py the rules and
database calls, schemas.py the request and response bodies."""
