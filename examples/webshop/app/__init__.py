"""A small web shop: its own `app` package beside Sluice's (`import sluice`)."""
