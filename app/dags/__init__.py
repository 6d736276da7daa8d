"""The DAG definitions API."""

from litestar import Router

from app.dags.routes import DagsController
from app.yaml_body import YamlRequest

router = Router(path="/", route_handlers=[DagsController], request_class=YamlRequest)
