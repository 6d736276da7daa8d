"""Enqueue from a Python application in its own psycopg transaction (no Sluice
import needed: the database is the interface)."""

import psycopg
from psycopg.types.json import Jsonb


def place_order(conn: psycopg.Connection, email: str, total: float) -> int:
    with conn.transaction():
        order_id = conn.execute(
            "INSERT INTO shop.orders (customer_email, total) VALUES (%s, %s) RETURNING id",
            (email, total),
        ).fetchone()[0]
        conn.execute(
            "SELECT sluice.enqueue('email', %s, queue => 'mail', idempotency_key => %s)",
            (
                Jsonb({"to": [email], "subject": f"Your order {order_id}", "body": "Thanks!"}),
                f"order-{order_id}-confirmation",
            ),
        )
    return order_id
