"""The harness itself: a real server, the migrated schema, one database per test."""

from sluice.core.migrate import head_revision


async def test_each_test_gets_a_migrated_database(db):
    cur = await db.execute("SELECT version_num FROM sluice.alembic_version")
    assert await cur.fetchone() == (head_revision(),)
    cur = await db.execute("SELECT count(*) FROM sluice.jobs")
    assert await cur.fetchone() == (0,)
    await db.execute("INSERT INTO sluice.jobs (task) VALUES ('noop')")


async def test_databases_are_not_shared_between_tests(db):
    # The previous test inserted a job; this database is a fresh clone.
    cur = await db.execute("SELECT count(*) FROM sluice.jobs")
    assert await cur.fetchone() == (0,)
