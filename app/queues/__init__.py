"""The queues area (/api/v1/queues): routes.py is HTTP only, service.py the rules
and database calls, schemas.py the bodies."""
