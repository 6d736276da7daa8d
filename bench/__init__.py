"""Sluice's load-test harness: `python -m bench SCENARIO`.

Every scenario runs against a PostgreSQL the harness starts itself (the embedded
cluster of `sluice up`, default durability) or against `SLUICE_DATABASE_URL`,
and writes a JSON record, a markdown table and, where useful, a PNG chart under
`bench/results/`. See bench/README.md for what each scenario measures.
"""
