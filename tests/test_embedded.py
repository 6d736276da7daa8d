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
    monkeypatch.setattr(embedded, "_candidate_bindirs", lambda: [tmp_path])
    with pytest.raises(EmbeddedError) as error:
        embedded.find_bindir()
    message = str(error.value)
    assert "apt-get install postgresql" in message
    assert "SLUICE_DATABASE_URL" in message
