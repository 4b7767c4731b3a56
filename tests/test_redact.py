"""mambapipe.redact: Hugging Face tokens and credentials masked in what mambapipe prints, logs and records; and each
place that applies it (the one-line messages, standard error's diagnostics, the commands a run and a sweep print, the
ranks' output). The download step's end to end, against a fake hub: tests/steps/test_download_fake_hub.py."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest
from rich.console import Console

from mambapipe.parallel import _RankOutput
from mambapipe.pipeline.report import print_diagnostic
from mambapipe.pipeline.runner import resume_command
from mambapipe.pipeline.step import StepError, crash_summary, first_line
from mambapipe.redact import RedactingFormatter, redact
from mambapipe.sweep.expected import SweepConfig

TOKEN, OTHER_TOKEN, STORED_TOKEN = "fake-env-token-1234", "fake-legacy-variable-token", "fake-stored-token-5678"
SHAPED = "hf_" + "aBcD0123" * 4 + "xy"  # the shape of a real token: hf_ and 34 letters and digits


@pytest.fixture
def tokens(monkeypatch, tmp_path):
    """HF_TOKEN, HUGGING_FACE_HUB_TOKEN and a token huggingface_hub stored (`hf auth login`) each set."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", OTHER_TOKEN)
    (tmp_path / "token").write_text(STORED_TOKEN + "\n")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))


def test_the_tokens_huggingface_hub_would_send_are_masked_wherever_they_are(tokens):
    assert redact(f"401 for {TOKEN}, {OTHER_TOKEN}; stored={STORED_TOKEN}!") == "401 for ***, ***; stored=***!"


@pytest.mark.parametrize("text, masked", [
    ("Server error for url 'https://user:s3cret@mirror.example/api/models/x'",
     "Server error for url 'https://***@mirror.example/api/models/x'"),
    ("git clone https://ghp_abc123@github.com/o/r", "git clone https://***@github.com/o/r"),
    ("headers={'authorization': 'Bearer abc.def-ghi', 'user-agent': 'x'}",
     "headers={'authorization': '***', 'user-agent': 'x'}"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: ***"),
    ("sent Bearer abc.def-ghi then gave up", "sent Bearer *** then gave up"),
    (f"export HF_TOKEN={SHAPED}; python -m mambapipe", "export HF_TOKEN=***; python -m mambapipe"),
])
def test_credentials_are_masked_by_their_shape(text, masked):
    assert redact(text) == masked
    assert redact(masked) == masked  # redacting twice (a StepError's text, then standard error's line) is no change


@pytest.mark.parametrize("text", [
    "convert: layout hf_mamba2, hf_token_agreement 0.98 (eval.compare_hf); see https://huggingface.co/state-spaces/x",
    f"download: cannot reach fake-org/x at {'5eed' * 10}; mail admin@example.org",
])
def test_mambapipe_s_own_text_is_left_as_it_is(tokens, text):
    assert redact(text) == text


def test_a_value_too_short_to_be_a_token_masks_nothing(monkeypatch):
    """HF_TOKEN=1 would otherwise turn every `1` of every line into ***."""
    monkeypatch.setenv("HF_TOKEN", "1")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert redact("tp_size 1, 1 layer") == "tp_size 1, 1 layer"


def test_one_line_messages_of_exceptions_and_step_errors_are_redacted(tokens):
    quoting = RuntimeError(f"refused Authorization: Bearer {TOKEN}\nmore")
    assert first_line(quoting) == "refused Authorization: ***"
    assert crash_summary(quoting) == "unexpected RuntimeError: refused Authorization: ***"
    error = StepError(f"fetching x failed ({STORED_TOKEN}); run again", f"second {OTHER_TOKEN}")
    assert error.problems == ("fetching x failed (***); run again", "second ***")
    assert str(error) == "fetching x failed (***); run again; second ***"


def test_standard_error_s_diagnostics_are_redacted(tokens):
    errors = Console(file=io.StringIO(), width=300)
    print_diagnostic(errors, f"[red]FAILED[/] summary failed: {TOKEN}")
    assert errors.file.getvalue() == "FAILED summary failed: ***\n"


def test_the_commands_a_run_and_a_sweep_print_and_record_are_redacted(tmp_path):
    """A token given on the command line (a sweep's hydra.launcher.setup, exporting HF_TOKEN on the SLURM nodes) is ***
    in the commands printed, and in summary.md, which is there to paste."""
    setup = f"hydra.launcher.setup=[export HF_TOKEN={SHAPED}]"
    assert resume_command(["dtype=float32", f"+hf_token={SHAPED}"], tmp_path).endswith(
        f"dtype=float32 '+hf_token=***' hydra.run.dir={tmp_path}")
    sweep = SweepConfig(tmp_path, {"overrides": {"task": ["dtype=float32,bfloat16"], "hydra": [setup]}}, None)
    assert sweep.command() == ("python -m mambapipe -m dtype=float32,bfloat16 "
                               "'hydra.launcher.setup=[export HF_TOKEN=***]'")


def test_the_ranks_output_is_redacted_on_standard_error_and_in_their_log(tokens, tmp_path, capsys):
    log = io.StringIO()
    for stream in (None, log):
        _RankOutput(tmp_path, stream).show(f"OSError: 401 for https://user:{TOKEN}@mirror/x\n")
    assert capsys.readouterr().err == log.getvalue() * 2 == "OSError: 401 for https://***@mirror/x\n" * 2


def test_the_log_formatter_redacts_the_message_and_the_traceback(tokens):
    try:
        raise ValueError(f"bad token {STORED_TOKEN}")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "GET %s", (f"https://u:{TOKEN}@h/x",), exc_info)
    formatted = RedactingFormatter("%(name)s %(message)s").format(record)
    assert formatted.startswith("httpx GET https://***@h/x\n") and formatted.endswith("ValueError: bad token ***")
    assert Path(__file__).name in formatted  # the traceback itself is kept
