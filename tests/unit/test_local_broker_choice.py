"""The broker choice of the local stack without starting anything: which defaults `stack up` writes
for each broker, and when Maven is (not) asked to resolve Apache Kafka again."""

from __future__ import annotations

from pathlib import Path

import pytest

from highland.settings import Settings
from highland.stack import kafka, local


def _settings(state: Path, broker: str) -> Settings:
    return Settings(state_dir=state, broker=broker, install_missing=False)  # type: ignore[arg-type]


def test_the_tansu_idempotence_workaround_is_written_for_tansu_only(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("HIGHLAND_PRODUCER_IDEMPOTENCE", raising=False)
    assert local.ensure_secrets(_settings(tmp_path, "tansu"))["HIGHLAND_PRODUCER_IDEMPOTENCE"] == "false"
    # The same state folder moved to Apache Kafka: the workaround goes, the passwords stay.
    before = local.ensure_secrets(_settings(tmp_path, "tansu"))
    after = local.ensure_secrets(_settings(tmp_path, "kafka"))
    assert "HIGHLAND_PRODUCER_IDEMPOTENCE" not in after
    assert {k: after[k] for k in local.SECRET_KEYS} == {k: before[k] for k in local.SECRET_KEYS}
    assert Settings(_env_file=local.env_file(_settings(tmp_path, "kafka"))).producer_idempotence is True


def test_a_deliberate_idempotence_setting_in_local_env_is_kept(tmp_path: Path):
    local.env_file(_settings(tmp_path, "kafka")).write_text("HIGHLAND_PRODUCER_IDEMPOTENCE=true\n")
    assert local.ensure_secrets(_settings(tmp_path, "kafka"))["HIGHLAND_PRODUCER_IDEMPOTENCE"] == "true"


def test_a_lib_folder_resolved_from_this_pom_is_not_resolved_again(tmp_path: Path, monkeypatch):
    settings = _settings(tmp_path, "kafka")
    lib = kafka.home(settings) / "lib"
    lib.mkdir(parents=True)
    (lib / kafka.RESOLVED_MARK).write_text(kafka._pom_hash() + "\n")
    monkeypatch.setattr(kafka.shutil, "which", lambda name: None)  # Maven would be needed: it is not
    assert kafka.resolve(settings) == lib


def test_another_pom_resolves_again_and_names_maven_when_it_is_missing(tmp_path: Path, monkeypatch):
    settings = _settings(tmp_path, "kafka")
    lib = kafka.home(settings) / "lib"
    lib.mkdir(parents=True)
    (lib / kafka.RESOLVED_MARK).write_text("the hash of an older pom\n")
    monkeypatch.setattr(kafka.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="mvn"):
        kafka.resolve(settings)


def test_the_pom_names_a_kafka_release():
    assert kafka.version().split(".")[0].isdigit()
