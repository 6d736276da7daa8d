"""Health, readiness and metrics (/health, /ready, /metrics; no token): routes.py is
HTTP only, service.py the checks and database reads, schemas.py the bodies."""
