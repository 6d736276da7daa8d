"""The shop's tasks: imported by the web service (to enqueue them) and by the
workers (`SLUICE_TASK_MODULES=app.tasks sluice worker`, from examples/webshop,
or `SLUICE_TASK_MODULES=examples.webshop.app.tasks` from the repository)."""

from __future__ import annotations

from decimal import Decimal

import msgspec

import sluice

VAT = Decimal("0.20")


class Invoice(msgspec.Struct):
    order_id: int
    number: str
    net: Decimal
    vat: Decimal
    gross: Decimal


@sluice.task(name="shop.invoice", max_attempts=3, timeout="30s")
def invoice(order_id: int, total: Decimal) -> Invoice:
    """Make the order's invoice (a real shop would render a PDF and store it)."""
    if total <= 0:
        raise sluice.NonRetryableError(f"order {order_id}: nothing to invoice ({total})")
    net = (total / (1 + VAT)).quantize(Decimal("0.01"))
    return Invoice(
        order_id=order_id, number=f"INV-{order_id:06d}", net=net, vat=total - net, gross=total
    )
