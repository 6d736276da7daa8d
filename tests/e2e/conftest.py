"""End-to-end tests use the API fixtures and real `sluice worker` processes."""

from tests.api.conftest import api_settings, client, make_client  # noqa: F401
from tests.worker.conftest import spawn_worker  # noqa: F401
