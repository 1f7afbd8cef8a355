from __future__ import annotations

from pathlib import Path

import pytest

from kbqa.config import load_settings
from kbqa.errors import ConfigError


def test_defaults_load_from_package() -> None:
    s = load_settings(environ={})
    assert s.embedding.model == "use-multilingual"
    assert s.splitter.chunk_overlap < s.splitter.chunk_size


def test_yaml_env_and_keyword_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("retrieval:\n  k: 7\nsplitter:\n  chunk_size: 300\n", encoding="utf-8")
    s = load_settings(cfg, environ={"KBQA_RETRIEVAL__K": "9", "KBQA_HOME": str(tmp_path)})
    assert s.retrieval.k == 9 and s.splitter.chunk_size == 300 and s.home == tmp_path
    s = load_settings(cfg, environ={"KBQA_RETRIEVAL__K": "9"}, retrieval={"k": 3})
    assert s.retrieval.k == 3


def test_the_model_cache_variable_is_not_a_setting(tmp_path: Path) -> None:
    """KBQA_MODELS_DIR (the README's model cache) once made every command fail: 'models_dir: Extra inputs'."""
    s = load_settings(environ={"KBQA_MODELS_DIR": str(tmp_path), "KBQA_CONFIG": "", "KBQA_RETRIEVAL__K": "4"})
    assert s.retrieval.k == 4


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="chunk_overlap"):
        load_settings(environ={}, splitter={"chunk_size": 100, "chunk_overlap": 100})
    with pytest.raises(ConfigError, match=r"retrieval\.k"):
        load_settings(environ={}, retrieval={"k": 0})
    with pytest.raises(ConfigError, match="bogus"):
        load_settings(environ={}, bogus=1)
    bad = tmp_path / "bad.yaml"
    bad.write_text("retrieval: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml", environ={})
