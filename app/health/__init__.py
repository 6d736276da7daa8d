"""Health, readiness and metrics endpoints."""

from litestar import Router

from sluice.health.routes import health, ready, scrape

router = Router(path="/", route_handlers=[health, ready, scrape])
