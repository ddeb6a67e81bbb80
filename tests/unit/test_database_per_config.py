"""Two servers started from different config files do not share one keys/usage database
unless a config says so."""

from __future__ import annotations

from pathlib import Path

from modelport.config import load_config, parse_config
from modelport.store.database import database_url


def write(path: Path, server: str = "{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"server: {server}\nmodels: []\n")
    return path


def sqlite_file(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


def test_each_config_file_gets_its_own_database_in_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path / "data"))
    team_a = write(tmp_path / "a" / "modelport.yaml")
    team_b = write(tmp_path / "b" / "modelport.yaml")
    beside = write(tmp_path / "a" / "staging.yaml")
    files = [sqlite_file(database_url(load_config(path))) for path in (team_a, team_b, beside)]
    assert len(set(files)) == 3
    assert all(file.parent == tmp_path / "data" for file in files)
    assert files[0].name.startswith("modelport-") and files[2].name.startswith("staging-")
    # The same file read again (a restart, a reload) finds the same database.
    assert sqlite_file(database_url(load_config(team_a))) == files[0]


def test_a_configured_data_dir_and_the_built_in_config_keep_modelport_db(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path / "data"))
    config = load_config(write(tmp_path / "c" / "modelport.yaml", "{data_dir: state}"))
    assert sqlite_file(database_url(config)) == tmp_path / "c" / "state" / "modelport.db"
    assert sqlite_file(database_url(parse_config({}))) == tmp_path / "data" / "modelport.db"


def test_start_up_says_where_the_database_earlier_versions_shared_is(tmp_path, monkeypatch):
    from modelport.cli.startup_notes import startup_notes

    monkeypatch.setenv("MODELPORT_DATA_DIR", str(tmp_path / "data"))
    config = load_config(write(tmp_path / "modelport.yaml"))
    own = sqlite_file(database_url(config))

    def warnings() -> list[str]:
        return [text for level, text in startup_notes(config) if "earlier versions" in text]

    assert warnings() == []  # no shared database of an earlier version: nothing to say
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "modelport.db").write_bytes(b"")
    [warning] = warnings()
    assert str(own) in warning
    assert f"server.database_url: sqlite:///{tmp_path / 'data' / 'modelport.db'}" in warning
    own.write_bytes(b"")  # once this config's own database exists, it is not said again
    assert warnings() == []
