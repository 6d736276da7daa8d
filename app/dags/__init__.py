"""The DAG definitions API."""

from litestar import Router

from sluice.dags.routes import DagsController
from sluice.yaml_body import YamlRequest

router = Router(path="/", route_handlers=[DagsController], request_class=YamlRequest)
