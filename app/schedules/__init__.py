"""The schedules area (/api/v1/schedules; the worker's scheduler fires them):
routes.py is HTTP only, service.py the rules and database calls, schemas.py the bodies."""
