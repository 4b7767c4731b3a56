"""The one reader of TensorRT-LLM config.json files: a bad file is one line naming it and the step to rerun."""

from __future__ import annotations

import pytest

from mambapipe.checkpoint.config_json import config_tp_size, read_config_json
from mambapipe.pipeline.step import StepError


def test_reads_the_object(tmp_path):
    (tmp_path / "config.json").write_text('{"architecture": "MambaForCausalLM", "dtype": "float16"}')
    assert read_config_json(tmp_path, "a TensorRT-LLM checkpoint", "convert")["dtype"] == "float16"


@pytest.mark.parametrize("content, problem", [
    (None, "has no config.json"),
    ('{"dtype": "float16",', r"config\.json is not valid JSON \(.* at line 1\)"),
    ("[1, 2]", r"config\.json holds a JSON list, not an object"),
    (b"\xff\xfe{}", r"config\.json is not valid JSON \(not UTF-8 text\)"),
])
def test_a_bad_file_is_one_line_naming_it_and_the_step_to_rerun(tmp_path, content, problem):
    if isinstance(content, bytes):
        (tmp_path / "config.json").write_bytes(content)
    elif content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(StepError, match=problem) as err:
        read_config_json(tmp_path, "a TensorRT-LLM checkpoint", "convert")
    message = str(err.value)
    assert str(tmp_path) in message and "\n" not in message
    assert message.endswith("not a TensorRT-LLM checkpoint; rerun the convert step (force=[convert])")


def test_a_missing_directory_is_named_as_missing(tmp_path):
    with pytest.raises(StepError) as err:
        read_config_json(tmp_path / "gone", "an engine directory", "build")
    assert str(err.value) == (f"{tmp_path / 'gone'} does not exist (it should be an engine directory); check the path, "
                              "or rerun the build step (force=[build])")


@pytest.mark.parametrize("mapping, tp_size", [({"tp_size": 4, "world_size": 4}, 4), ({"world_size": 2}, 2),
                                              ({}, 1), (None, 1)])
def test_the_tp_size_a_config_names(mapping, tp_size):
    """mapping: null (and no mapping at all) is one rank, where the build step's check used to fail on it."""
    assert config_tp_size({"mapping": mapping}) == tp_size and config_tp_size({}) == 1
