"""The runs area (/api/v1/runs, and POST /api/v1/dags/{name}/runs): routes.py is HTTP
only, service.py the rules and database calls, schemas.py the bodies, layout.py the
drawing of a run."""
