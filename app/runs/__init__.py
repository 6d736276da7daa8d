"""The runs API."""

from litestar import Router

from sluice.runs.routes import RunsController
from sluice.yaml_body import YamlRequest

router = Router(path="/", route_handlers=[RunsController], request_class=YamlRequest)
