"""The DAG definitions area (/api/v1/dags): routes.py is HTTP only, service.py the
rules and database calls, schemas.py the request and response bodies. Starting a
run of a DAG is the runs area's (sluice.runs)."""
