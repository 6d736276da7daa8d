"""What handlers can ask for by parameter name (provided in app.main)."""

from __future__ import annotations

from litestar.di import NamedDependency
from psycopg import AsyncConnection

from app.auth.principal import Principal
from app.settings import ApiSettings
from app.tasks import TaskCatalog

Conn = NamedDependency[AsyncConnection]  # `conn`: a pooled connection for this request
Caller = NamedDependency[Principal]  # `principal`: who is calling
Settings = NamedDependency[ApiSettings]  # `settings`
Catalog = NamedDependency[TaskCatalog]  # `catalog`: the tasks this API accepts
