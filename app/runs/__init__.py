"""The runs API."""

from litestar import Router

from app.runs.routes import RunsController
from app.yaml_body import YamlRequest

router = Router(path="/", route_handlers=[RunsController], request_class=YamlRequest)
