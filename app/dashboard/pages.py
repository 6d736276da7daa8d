"""The dashboard's pages. Each renders its template; its script does the rest."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from sluice.auth import VIEWER, Principal
from sluice.dashboard.render import page
from sluice.http.shapes import IdPath

PageRequest = Request[Principal, Any, Any]


@get("/", guards=VIEWER)
async def overview(request: PageRequest) -> Response[str]:
    """Queues, throughput, wait times, workers and the DLQ at a glance, refreshed live."""
    return page(request, "overview.html", nav="overview")


@get("/jobs", guards=VIEWER)
async def jobs(request: PageRequest) -> Response[str]:
    """Jobs filtered by state, queue, task and creation time; search by id."""
    return page(request, "jobs.html", nav="jobs")


@get("/jobs/{job_id:int}", guards=VIEWER)
async def job(request: PageRequest, job_id: IdPath) -> Response[str]:
    """One job: payload, result, attempts as a timeline; cancel and retry."""
    return page(request, "job.html", nav="jobs", job_id=job_id)


@get("/runs", guards=VIEWER)
async def runs(request: PageRequest) -> Response[str]:
    """DAG runs and how far along each is."""
    return page(request, "runs.html", nav="runs")


@get("/runs/{run_id:int}", guards=VIEWER)
async def run(request: PageRequest, run_id: IdPath) -> Response[str]:
    """One run drawn as its DAG, nodes coloured by state as it progresses."""
    return page(request, "run.html", nav="runs", run_id=run_id)


@get("/dlq", guards=VIEWER)
async def dead_letters(request: PageRequest) -> Response[str]:
    """The dead-letter queue; retry or discard one or many."""
    return page(request, "dlq.html", nav="dlq")


@get("/queues", guards=VIEWER)
async def queues(request: PageRequest) -> Response[str]:
    """Queues: depth per state, pause, resume, concurrency limit."""
    return page(request, "queues.html", nav="queues")


@get("/schedules", guards=VIEWER)
async def schedules(request: PageRequest) -> Response[str]:
    """Cron schedules: next fire times, enable and disable."""
    return page(request, "schedules.html", nav="schedules")


PAGES = [overview, jobs, job, runs, run, dead_letters, queues, schedules]
