"""The shop's web service (Litestar + SQLAlchemy on psycopg):

    POST /orders {"email": "ada@example.com", "total": "42.50"}

inserts the order and enqueues its invoice in one transaction (the order and
its job exist together or not at all), then waits for the invoice, woken by
the job's end, and answers it. `uvicorn app.main:app` from examples/webshop,
with SLUICE_DATABASE_URL pointing at Sluice's database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import msgspec
from litestar import Litestar, Response, post
from litestar.datastructures import State
from litestar.params import JSONBody
from sqlalchemy import BigInteger, Numeric, String, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sluice

from .tasks import Invoice, invoice


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = {"schema": "shop"}

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    total: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    invoice_job: Mapped[int | None] = mapped_column(BigInteger)


class NewOrder(msgspec.Struct):
    email: str
    total: Decimal


class Placed(msgspec.Struct):
    order_id: int
    job_id: int
    invoice: Invoice


def database_url() -> str:
    url = os.environ.get("SLUICE_DATABASE_URL", "postgresql://localhost/sluice")
    # SQLAlchemy on psycopg 3, the driver Sluice enqueues through.
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    engine = create_async_engine(database_url())
    async with engine.begin() as conn:
        await conn.execute(text("CREATE SCHEMA IF NOT EXISTS shop"))
        await conn.run_sync(Base.metadata.create_all)
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        yield
    finally:
        await engine.dispose()


@post("/orders")
async def place_order(
    data: JSONBody[NewOrder], state: State
) -> Response[Placed | dict[str, object]]:
    session: AsyncSession
    async with state.sessions() as session, session.begin():
        order = Order(email=data.email, total=data.total)
        session.add(order)
        await session.flush()  # the order's id
        job = await invoice.enqueue(session, order_id=order.id, total=order.total)
        order.invoice_job = job.id
    # Committed: the order and its job now exist for everyone, workers included.
    try:
        made = await job.result(timeout=10)
    except TimeoutError:  # accepted; the client can follow GET /api/v1/jobs/{id}?wait=30s
        return Response({"order_id": order.id, "job_id": job.id}, status_code=202)
    except sluice.JobFailed as exc:
        return Response({"order_id": order.id, "error": exc.last_error}, status_code=422)
    return Response(Placed(order_id=order.id, job_id=job.id, invoice=made), status_code=201)


app = Litestar(route_handlers=[place_order], lifespan=[lifespan])
