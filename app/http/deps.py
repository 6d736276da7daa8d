"""What route handlers can ask for by parameter name (provided in sluice.main)."""

from __future__ import annotations

from litestar.di import NamedDependency
from psycopg import AsyncConnection

from sluice.auth.principal import Principal
from sluice.core.tasks import TaskCatalog
from sluice.http.settings import ApiSettings

Conn = NamedDependency[AsyncConnection]  # `conn`: a pooled connection for this request
# `read_conn`: from the read pool, for reads that tolerate replication lag (the rule:
# sluice.http.pool.provide_read_connection)
ReadConn = NamedDependency[AsyncConnection]
Caller = NamedDependency[Principal]  # `principal`: who is calling
Settings = NamedDependency[ApiSettings]  # `settings`
Catalog = NamedDependency[TaskCatalog]  # `catalog`: the tasks this API accepts
