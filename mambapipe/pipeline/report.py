"""What the runner prints: the plan before work starts and a summary table users can paste."""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mambapipe.evaluate.protocol import articles, dataset_label, rouge_interval
from mambapipe.pipeline.keys import short
from mambapipe.pipeline.plan import CACHED, MISSING, RUN, Plan
from mambapipe.pipeline.provenance import machine_line, software_line, utc_minute
from mambapipe.redact import redact

_ACTION_STYLE = {RUN: "yellow", CACHED: "green", MISSING: "red"}
_HEADLINE_ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")  # named as metrics.json names them
_HEADLINE_INTERVALS = ("rouge1",)  # the others' would crowd the line: evaluate's table and metrics.json have them
GATE_MISSED = "gate missed"  # beside a step's status (step_status)


def make_console(stderr: bool = False) -> Console:
    """The console of standard output, for the results a user pastes (the plan, tables, the summary), or with `stderr`
    the one of standard error, for what went wrong and what to do about it (print_diagnostic). Each is in color only
    where its own stream is a terminal (rich asks the stream): `> results.txt 2> errors.txt` holds no escape codes."""
    stream = sys.stderr if stderr else sys.stdout
    # Logs and CI are not terminals: a fixed width keeps the tables from folding at 80 columns, unless COLUMNS
    # asks for another (rich reads it itself), e.g. COLUMNS=250 mambapipe-cache ls > cache.txt.
    asked = os.environ.get("COLUMNS", "")
    fixed = None if stream.isatty() or (asked.isdigit() and int(asked) > 0) else 120
    return Console(width=fixed, highlight=False, stderr=stderr)


def end_quietly_on_broken_pipe() -> None:
    """End a command whose standard output's reader went away (`| head`) as rich's console ends one that prints
    through it (mambapipe-cache ls, mambapipe-sweep summarize): standard output pointed at devnull, so that nothing
    left to write (the interpreter's last flush) fails again, and exit 1, without a word. For what rich does not
    print: Hydra's --help, --version, the engine's JSON."""
    make_console().on_broken_pipe()  # raises SystemExit(1)


def print_diagnostic(errors: Console, markup: str) -> None:
    """`markup` on `errors` (standard error's console) in one line however long, after whatever standard output still
    buffers: on a terminal that shows both streams, an error comes below the results it follows. Redacted: a line may
    quote an exception's text or a command line (mambapipe.redact)."""
    sys.stdout.flush()
    errors.print(redact(markup), soft_wrap=True)


def model_description(model: dict[str, Any]) -> str:
    """`my-m1 (synthetic Mamba2, hidden 96, 3 layers, vocab 1024)`: the model's name, source and the architecture
    that runs, which the name alone does not tell (a recipe's model.arch changes the model file's)."""
    details = arch_description(model)
    return f"{model.get('name')} ({details})" if details else str(model.get("name"))


def arch_description(model: dict[str, Any]) -> str:
    """`synthetic Mamba2, hidden 96, 3 layers, vocab 1024`, of what the model config has ('' where nothing)."""
    arch = model.get("arch") if isinstance(model.get("arch"), dict) else {}
    kind = " ".join(str(part) for part in (model.get("source"), arch.get("mamba_version")) if part is not None)
    sizes = [text.format(arch[key]) for key, text in (("hidden_size", "hidden {}"), ("num_layers", "{} layers"),
                                                      ("vocab_size", "vocab {}")) if arch.get(key) is not None]
    return ", ".join(part for part in (kind, *sizes) if part)


def print_plan(console: Console, plan: Plan, show_notes: bool) -> None:
    config = plan.resolved.config
    console.print(f"[bold]mambapipe[/] model {escape(model_description(config['model']))}, dtype {config['dtype']}, "
                  f"tp {config['tp_size']}")
    console.print(f"device  {config['device']} ({plan.resolved.device_why})")
    console.print(f"backend {config['backend']} ({plan.resolved.backend_why})")
    console.print(f"cache   {plan.store.root}")
    table = Table(title="plan", title_justify="left")
    for column in ("step", "key", "action", "why"):
        table.add_column(column)
    for planned in plan.steps:
        style = _ACTION_STYLE.get(planned.action, "dim")
        table.add_row(planned.name, short(planned.key), f"[{style}]{planned.action}[/]", escape(planned.reason))
    console.print(table)
    if show_notes:
        for planned in plan.steps:
            for note in planned.notes:
                console.print(f"  {planned.name}: {escape(note)}", soft_wrap=True)
    for problem in plan.problems:
        console.print(f"[red]problem[/] {escape(problem)}", soft_wrap=True)


def headline(metrics: Optional[dict[str, Any]]) -> list[str]:
    """The few numbers worth a glance, a line for each kind: ROUGE (rouge1 with its 95% interval), then throughput
    and what the numbers are of, the articles scored and their dataset (`rouge1 19.30 [16.84-21.93], rouge2 6.12,
    rougeL 15.20, rougeLsum 17.80` and `tok/s 318.19; 20 articles of sample`), as eval.batch_size changes how many
    eval.max_ite batches hold; or the benchmark's best row. Two lines, as one would pass 120 columns."""
    if not metrics:
        return []
    if metrics.get("task") == "benchmark":
        rows = metrics.get("rows", [])
        best = max((r.get("tokens_per_s") or 0 for r in rows), default=0)
        skipped = sum(1 for r in rows if r.get("skipped"))
        counted = f"{len(rows)} scenario{'s' * (len(rows) != 1)}" + (f" ({skipped} skipped)" if skipped else "")
        return [f"{counted}, best {best:.1f} tok/s"]
    scores = ", ".join(f"{key} {metrics[key]:.2f}{rouge_interval(metrics, key) if key in _HEADLINE_INTERVALS else ''}"
                       for key in _HEADLINE_ROUGE if isinstance(metrics.get(key), (int, float)))
    speed = f"tok/s {metrics['tokens_per_s']:.2f}" if isinstance(metrics.get("tokens_per_s"), (int, float)) else ""
    of_what = "; ".join(part for part in (speed, _articles_scored(metrics)) if part)
    return [line for line in (scores, of_what) if line]


def _articles_scored(metrics: dict[str, Any]) -> str:
    """`20 articles of cnn_dailymail@1a2b3c4d5e6f`, or as much of it as metrics.json says."""
    count, label = metrics.get("samples"), dataset_label(metrics)
    if count is None:
        return label or ""
    return articles(count) + (f" of {label}" if label else "")


def print_summary(console: Console, outcomes: Sequence[Any], metrics: Optional[dict[str, Any]],
                  config: Optional[dict[str, Any]], record: dict[str, Any]) -> None:
    """The steps, then the evaluate step's headline and what ran where, a labelled line each, so that the summary
    pasted alone says it: the model and its architecture, dtype, tp, device and backend (of the resolved `config`,
    where there is one), the code (`record`, as run.json has it) and the machine. The headline is not a column of
    the table: beside the step, key, status and seconds it would fold at 120 columns."""
    table = Table(title="summary", title_justify="left")
    for column in ("step", "key", "status", "seconds"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for outcome in outcomes:
        gate = f", [red]{GATE_MISSED}[/]" if outcome.gate_missed else ""  # as step_status says it, in color
        table.add_row(outcome.name, short(outcome.key), outcome.status + gate, f"{outcome.seconds:.1f}")
    console.print(table)
    for index, line in enumerate(headline(metrics)):
        console.print(f"{'result' if index == 0 else '':<9}{escape(line)}", soft_wrap=True)
    if config is not None:
        console.print(f"run      {escape(run_description(config))}", soft_wrap=True)
    console.print(f"software {escape(software_line(record))}", soft_wrap=True)
    machine = machine_line(record) or "not recorded"
    console.print(f"machine  {escape(machine)}; finished {utc_minute(record['finished'])}", soft_wrap=True)


def step_status(status: str, gate_missed: bool) -> str:
    """A step's status as the summaries show it: `cached, gate missed` where its artifact failed the step's gate, as
    `cached` alone would read as a step that did its part (run.json keeps the two apart, for scripts)."""
    return f"{status}, {GATE_MISSED}" if gate_missed else status


def run_description(config: dict[str, Any]) -> str:
    """`my-m1 (synthetic Mamba1, hidden 96, 3 layers, vocab 1024), dtype bfloat16, tp 1, device cpu, backend native`"""
    return (f"{model_description(config['model'])}, dtype {config['dtype']}, tp {config['tp_size']}, "
            f"device {config['device']}, backend {config['backend']}")
