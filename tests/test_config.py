"""Settings are checked at start: a wrong, contradictory or misplaced setting is an error
that names it (and the file it came from), never a silent default or a traceback later."""

from __future__ import annotations

from pathlib import Path

import pytest

from revisit.config import ConfigError, dotted_overrides, load_settings


def _load(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    return load_settings(None, data=tmp_path / "d", **kw)


def test_memory_queue_url_is_the_in_process_default(tmp_path: Path) -> None:
    """memory:// is no broker: ingest must not publish and wait for workers."""
    assert _load(tmp_path, queue_url="memory://").queue_url == ""


@pytest.mark.parametrize(("kw", "words"), [
    ({"store_url": "ftp://x/y"}, "unknown scheme 'ftp'"),
    ({"index_url": "faiss://?bogus=1"}, "unknown option(s) bogus"),
    ({"store_url": "postgresql:user:secret@db"}, "store_url is not a URL"),
    ({"identity": {"merge_threshold": 0.3, "merge_threshold_same_store": 0.4}},
     "merge_threshold_same_store <= merge_threshold"),
    ({"quality": {"max_create_yaw": 80, "max_match_yaw": 10}}, "max_create_yaw <= max_match_yaw"),
])
def test_a_wrong_or_contradictory_setting_is_named(tmp_path: Path, kw: dict, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, **kw)
    assert words in str(err.value) and "secret" not in str(err.value)


def test_data_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        load_settings(None, data=tmp_path / "f")


def test_only_the_data_directory_given_supplies_its_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """REVISIT_DATA's revisit.toml is not read when --data names another directory, and
    an error in a file says which file."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "revisit.toml").write_text("[identity]\nmatch_threshold = 5\n")
    monkeypatch.setenv("REVISIT_DATA", str(other))
    assert _load(tmp_path).identity.match_threshold is None
    with pytest.raises(ConfigError, match=f"config file {other / 'revisit.toml'}"):
        load_settings(None, data=other)


def test_unreadable_sources_are_config_errors(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[identity]")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(bad, data=tmp_path / "d")
    monkeypatch.setenv("REVISIT_IDENTITY", "garbage")
    with pytest.raises(ConfigError, match="identity"):
        _load(tmp_path)


def test_service_settings_are_bounded_and_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A purge interval past what a timer holds once killed the retention thread."""
    from revisit.api.settings import load_service_settings

    for name, value, words in (
            ("PURGE_INTERVAL_S", "999999999999999", "purge_interval_s"),
            ("SESSION_SECRET", "x", "at least 32 characters")):
        monkeypatch.setenv(f"REVISIT_SERVICE_{name}", value)
        with pytest.raises(ConfigError, match=words):
            load_service_settings()
        monkeypatch.delenv(f"REVISIT_SERVICE_{name}")


def test_a_misspelt_environment_variable_is_refused_with_the_nearest_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVISIT_STORE_URLL", "postgresql://x@127.0.0.1/y")
    monkeypatch.setenv("REVISIT_IDENTTY__MATCH_THRESHOLD", "0.5")
    with pytest.raises(ConfigError) as err:
        load_settings(data=tmp_path)
    assert "REVISIT_STORE_URLL (did you mean REVISIT_STORE_URL?)" in str(err.value)
    assert "did you mean REVISIT_IDENTITY__MATCH_THRESHOLD?" in str(err.value)
    monkeypatch.delenv("REVISIT_STORE_URLL")
    monkeypatch.delenv("REVISIT_IDENTTY__MATCH_THRESHOLD")
    # the product's other variables and real settings pass
    for name, value in {"REVISIT_AGENT_KEY": "k", "REVISIT_TEST_PG_URL": "x",
                        "REVISIT_SERVICE_MAX_BATCH_FRAMES": "8",
                        "REVISIT_IDENTITY__MATCH_THRESHOLD": "0.5"}.items():
        monkeypatch.setenv(name, value)
    assert load_settings(data=tmp_path).identity.match_threshold == 0.5


def test_an_error_names_the_source_it_came_from(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong environment variable was reported as coming from the config file: the
    operator looked for it in the wrong place."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "revisit.toml").write_text("[identity]\nneighbours = 0\n")
    monkeypatch.setenv("REVISIT_IDENTITY__MATCH_THRESHOLDD", "0.5")
    monkeypatch.setenv("REVISIT_PIPELINE", '{"threads": 100000}')
    with pytest.raises(ConfigError) as err:
        load_settings(None, data=data)
    lines = {line.split(":")[0].strip(): line for line in str(err.value).splitlines()[1:]}
    assert lines["identity.neighbours"].endswith(f"[from config file {data / 'revisit.toml'}]")
    assert lines["identity.match_thresholdd"].endswith(
        "[from environment REVISIT_IDENTITY__MATCH_THRESHOLDD]")
    assert lines["pipeline.threads"].endswith("[from environment REVISIT_PIPELINE]")


def test_a_wrong_command_line_value_is_not_blamed_on_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value set in both places was reported as coming from the environment, whose
    value (fine) the command line's had replaced."""
    monkeypatch.setenv("REVISIT_IDENTITY__MATCH_THRESHOLD", "0.5")
    with pytest.raises(ConfigError) as err:
        load_settings(None, data=tmp_path, **dotted_overrides(["identity.match_threshold=7"]))
    line = next(ln for ln in str(err.value).splitlines() if "match_threshold" in ln)
    assert line.endswith("[from the command line]"), line


@pytest.mark.parametrize("url", ["duckdb://", "duckdb:///"])
def test_a_duckdb_url_without_a_file_is_refused(tmp_path: Path, url: str) -> None:
    """duckdb:// (no path) opened the working directory: a DuckDB traceback at first use."""
    with pytest.raises(ConfigError, match="names no DuckDB file"):
        _load(tmp_path, store_url=url)


def test_a_duckdb_file_that_cannot_be_opened_is_a_one_line_error(tmp_path: Path) -> None:
    from revisit.store.base import StoreUnavailable
    from revisit.store.duckdb_store import DuckDBStore

    (tmp_path / "f").write_text("not a database")
    with pytest.raises(StoreUnavailable, match="cannot open the store"):
        DuckDBStore(tmp_path / "f")
    with pytest.raises(StoreUnavailable, match="cannot create the store's directory"):
        DuckDBStore(tmp_path / "f" / "x.duckdb")


@pytest.mark.parametrize("query", ["type=ivf&nprobe=0", "type=ivf&nprobe=-1", "type=hnsw&m=0",
                                   "type=hnsw&ef_search=0", "type=pq&flush=0",
                                   "type=hnsw&ef_search=1000000000"])
def test_an_index_option_out_of_range_is_refused_at_start(tmp_path: Path, query: str) -> None:
    """nprobe=0 was accepted and failed inside faiss once the main tier was first searched."""
    with pytest.raises(ConfigError, match="is outside"):
        _load(tmp_path, index_url=f"faiss://?{query}")


def test_a_data_directorys_config_file_that_is_no_file_is_refused(tmp_path: Path) -> None:
    """A revisit.toml that is a directory was skipped without a word: every setting default."""
    (tmp_path / "d" / "revisit.toml").mkdir(parents=True)
    with pytest.raises(ConfigError, match="is not a file"):
        _load(tmp_path)


def test_an_environment_table_that_is_no_json_names_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings' own message named an internal class, not the variable."""
    monkeypatch.setenv("REVISIT_OCCUPANCY", "{locations")
    with pytest.raises(ConfigError, match="REVISIT_OCCUPANCY is not valid JSON"):
        _load(tmp_path)


def test_a_check_of_the_whole_settings_names_its_fields_source(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheme checked across the URLs said nothing of where the wrong one was set; the
    value given on the command line (an override) names no source."""
    data = tmp_path / "d"
    data.mkdir()
    (data / "revisit.toml").write_text('store_url = "foo://x"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(None, data=data)
    assert str(err.value).endswith(
        f"store_url: unknown scheme 'foo' (one of duckdb://, postgresql://, postgres://) "
        f"[from config file {data / 'revisit.toml'}]")
    monkeypatch.setenv("REVISIT_QUEUE_URL", "redis:secret@host")
    with pytest.raises(ConfigError) as err:
        load_settings(None, data=tmp_path / "e")
    assert str(err.value).endswith("[from environment REVISIT_QUEUE_URL]")
    assert "queue_url is not a URL" in str(err.value) and "secret" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_settings(None, data=tmp_path / "e", queue_url="redis:x")
    assert str(err.value).endswith("queue_url is not a URL (expected scheme://...)")
