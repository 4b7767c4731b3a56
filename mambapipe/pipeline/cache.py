"""List and remove cached artifacts: `mambapipe-cache ls|rm` (or `python -m mambapipe.pipeline.cache`).

  mambapipe-cache ls [--step build]              each artifact's key, date, size and what it is; the total
                                                 (into a file or pipe 120 columns wide: COLUMNS=250 widens it)
  mambapipe-cache rm --key 1a2b3c4d5e6f          one artifact, by its key as ls and the plan print it (a shorter
                 [--step build]                  start will do where it is one artifact's; --step looks in one),
                                                 and what killed runs left in staging under that key
  mambapipe-cache rm --step evaluate             every artifact of one step
  mambapipe-cache rm --older-than 2026-01-31     artifacts created before that day (UTC); one whose manifest.json
                                                 is damaged has no date to read, so it goes by that file's mtime
  mambapipe-cache rm --all                       everything, including leftovers of killed runs
An artifact a running run is reading, or a forced re-run is making again (or made again once rm had selected it), is
kept (and named; the exit status is then 1).
The cache directory is `--cache-dir`, else $MAMBAPIPE_CACHE, else ~/.cache/mambapipe (as the runner).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from rich.cells import cell_len
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mambapipe.config import DEFAULT_CACHE_DIR, STEP_NAMES
from mambapipe.pipeline.keys import short
from mambapipe.pipeline.lineage import lineage
from mambapipe.pipeline.provenance import installed_version
from mambapipe.pipeline.report import make_console, print_diagnostic
from mambapipe.pipeline.resolve import flatten
from mambapipe.pipeline.store import MANIFEST, ArtifactStore, dir_size, staged_for


def default_cache_dir() -> Path:
    return Path(os.environ.get("MAMBAPIPE_CACHE", DEFAULT_CACHE_DIR)).expanduser()


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def created_at(created: str) -> datetime:
    """A manifest's `created`, read as UTC where it names no zone (a hand-written one)."""
    moment = datetime.fromisoformat(created)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def damaged_created(directory: Path) -> str:
    """The date of an artifact whose manifest is damaged, its `created` unreadable: when its manifest.json was last
    written (the runner writes it last, at commit; a hand edit that damaged it dates it at the edit)."""
    return modified(directory / MANIFEST)


def modified(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat()


def created_column(created: str) -> str:
    """A manifest's `created` to the minute, in UTC: the zone `rm --older-than` reads its day in."""
    return created_at(created).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def config_items(manifest: dict[str, Any]) -> dict[str, str]:
    """The params an artifact came from, flattened; the architecture summed up in one item; the hub commits it
    was pinned to (a branch's name alone does not say which files it holds), the fingerprints of the local
    directories and the hashes of the dataset files it was read from (one path before and after an edit); the
    artifacts it was made from. Each item as
    ls shows it, by what it sets (`eval.max_ite`, `commit`, `<-build`)."""
    flat = flatten(manifest.get("params", {}))
    items = {k: f"{k}={v}" for k, v in flat.items() if v is not None and not k.startswith("model.arch.")}
    arch = {k.removeprefix("model.arch."): v for k, v in flat.items() if k.startswith("model.arch.")}
    if arch:  # a step keyed on part of it (trtllm's build: mamba_version alone) shows that part
        items["model.arch"] = f"model.arch={arch_summary(arch)}"
    for name, value in manifest.get("environment", {}).items():
        if name.endswith(("commit", "fingerprint", "sha256")) and isinstance(value, str):
            items[name] = f"{name}={value[:12]}"
    for step, key in manifest.get("inputs", {}).items():
        items[f"<-{step}"] = f"<-{step} {short(key)}"
    return items


def arch_summary(arch: dict[str, Any]) -> str:
    sizes = [f"{letter}{arch[key]}" for letter, key in (("H", "hidden_size"), ("L", "num_layers"),
                                                        ("V", "vocab_size")) if key in arch]
    return " ".join(str(part) for part in [arch.get("mamba_version"), *sizes] if part is not None)


def describe(listed: list[tuple[Path, dict[str, Any]]], manifests: dict[tuple[str, str], dict[str, Any]]
             ) -> dict[Path, str]:
    """What each listed artifact is, in a line: its model and dtype (from the artifacts it was made from where it
    has no such params) and task, then the config items that tell it apart from its siblings, the listed artifacts
    of its step that those three leave alike (setting_apart). Every item that varied anywhere in the step put ~13
    settings in each evaluate row of a cache of several recipes, the one that told it apart ~250 characters in."""
    # Each artifact's lineage once: a listed one's serves both colliding_names and its summary (`manifests`, what
    # the listed ones may have been made from, holds them too)
    made_from = {directory: lineage(manifest, manifests.get) for directory, manifest in listed}
    listed_refs = {(directory.parent.name, directory.name) for directory in made_from}
    others = [lineage(manifest, manifests.get) for ref, manifest in manifests.items() if ref not in listed_refs]
    collide = colliding_names([*made_from.values(), *others])
    items = {directory: config_items(manifest) for directory, manifest in listed}
    summaries = {directory: summary(manifest, made_from[directory], collide) for directory, manifest in listed}
    alike = {directory: (directory.parent.name, *summaries[directory]) for directory, _ in listed}
    siblings: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for directory, _ in listed:
        siblings.setdefault(alike[directory], []).append(items[directory])
    return {directory: " ".join(summaries[directory] + setting_apart(items[directory], siblings[alike[directory]]))
            for directory, _ in listed}


def setting_apart(own: dict[str, str], siblings: list[dict[str, str]]) -> list[str]:
    """The items of `own` (one of `siblings`) other than the value most siblings share for that setting, the rarest
    first: what is left out is that common value, so no two rows read alike. Where no one value is the most common
    (two siblings: eval.max_ite=2 and =4), each row shows its own; an artifact without siblings shows none. Of items
    that the same siblings hold (build.max_batch_size=4 and the <-build made so) the first says it."""
    apart = []
    for position, (setting, item) in enumerate(own.items()):
        values = [sibling.get(setting) for sibling in siblings]  # None: a sibling without that setting
        counts = Counter(values)
        most = max(counts.values())
        if counts[item] < most or list(counts.values()).count(most) > 1:
            holders = frozenset(index for index, value in enumerate(values) if value == item)
            apart.append((len(holders), position, item, holders))
    told: set[frozenset[int]] = set()
    shown = []
    for _, _, item, holders in sorted(apart, key=lambda found: found[:2]):
        if holders not in told:
            told.add(holders)
            shown.append(item)
    return shown


def summary(manifest: dict[str, Any], made_from: dict[str, Any], collide: frozenset[str] = frozenset()) -> list[str]:
    """The model, dtype and task, each found in the manifest's params or in those of the artifacts it was made
    from (`made_from`: its lineage)."""
    found = [model_name(made_from, collide), made_from.get("dtype"), manifest.get("params", {}).get("eval.task")]
    return [str(value) for value in found if value is not None]


def model_location(params: dict[str, Any]) -> Optional[str]:
    """A hub model's repo_id or a local one's path, as the config gave it."""
    where = params.get("model.repo_id") or params.get("model.path")
    return where if params.get("model.source") in ("hub", "local") and isinstance(where, str) else None


def base_name(where: str) -> str:
    return where.rstrip("/").rsplit("/", 1)[-1]


def colliding_names(made_from: list[dict[str, Any]]) -> frozenset[str]:
    """The short model names that two different hub repositories or local paths share (org1/mamba and
    org2/mamba, /data/a/ckpt and /data/b/ckpt), among the params of artifacts and of what they were made from:
    those models go by their whole repo_id or path."""
    places: dict[str, set[tuple[Any, str]]] = {}
    for params in made_from:
        if (where := model_location(params)) is not None:
            places.setdefault(base_name(where), set()).add((params.get("model.source"), where.rstrip("/")))
    return frozenset(name for name, found in places.items() if len(found) > 1)


def model_name(params: dict[str, Any], collide: frozenset[str] = frozenset()) -> Optional[str]:
    """The download step's model, short: the hub repository's or the local directory's name (the whole repo_id
    or path where that name is in `collide`), or which Mamba a synthetic one is (the rest of its shape shows
    where it differs)."""
    source, where = params.get("model.source"), model_location(params)
    if where is not None:
        return where if base_name(where) in collide else base_name(where)
    arch = params.get("model.arch")
    if source == "synthetic" and isinstance(arch, dict) and arch.get("mamba_version"):
        return f"synthetic {arch['mamba_version']}"
    return source


@dataclass
class Row:
    step: str
    key: str
    created: str  # ISO, as a manifest has it
    size: int
    what: str
    in_staging: bool = False


# The least width of the 'what' column beside the others: it is what ls is for, so the creation time, then the size,
# give way to it. Less would wrap a model and its dtype ('synthetic Mamba2 bfloat16', 25) over two lines, and at 80
# columns (where the creation time leaves it 20) most rows over three; at 60 the creation time would leave it none.
LEAST_WHAT = 30
GIVE_WAY = ("created (UTC)", "size")


def list_artifacts(store: ArtifactStore, step: Optional[str], width: int) -> Group:
    """A row for each artifact and staging dir and the total below. What each one is wraps, at spaces, where `width`
    is too narrow for it: cut short, it lost what tells artifacts apart, which comes last, and at 80 columns even the
    dtype. The columns of GIVE_WAY are left out in turn where `width` would leave the description less than
    LEAST_WHAT, or too little for its longest word (a setting, `build.max_batch_size=16`), which would be broken
    inside."""
    rows = artifact_rows(store, step)
    whats = [Text.from_markup(row.what) for row in rows]
    columns = {"step": [row.step for row in rows], "key": [short(row.key) for row in rows],
               "created (UTC)": [created_column(row.created) for row in rows],
               "size": [human_size(row.size) for row in rows]}
    least_what = max([LEAST_WHAT, *(longest_word(what) for what in whats)])
    for column in GIVE_WAY:
        if width - width_besides_what(columns) < least_what:
            del columns[column]
    table = Table(title=f"artifacts in {store.root}", title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column == "size" else "left", no_wrap=True)
    # The one column that wraps, so that it is what narrows on a narrow terminal; a word wider than it is folded
    table.add_column("what", overflow="fold")
    for index, what in enumerate(whats):
        table.add_row(*(cells[index] for cells in columns.values()), what)
    return Group(table, total_line(rows))


def width_besides_what(columns: dict[str, list[str]]) -> int:
    """How wide the table is but for the text of its 'what' column: each other column's widest cell, and the
    padding and border of every column (3 characters each) and the table's last border."""
    widest = [max(cell_len(cell) for cell in [name, *cells]) for name, cells in columns.items()]
    return sum(widest) + 3 * (len(columns) + 1) + 1


def longest_word(text: Text) -> int:
    return max((cell_len(word) for word in text.plain.split()), default=0)


def artifact_rows(store: ArtifactStore, step: Optional[str]) -> list[Row]:
    complete, damaged = _split_by_manifest(store, step)
    upstream = store.artifacts() if step else complete  # what the listed ones were made from
    descriptions = describe(complete, {(d.parent.name, d.name): m for d, m in upstream})
    rows = [Row(manifest.get("step", directory.parent.name), directory.name, manifest["created"],
                dir_size(directory), escape(descriptions[directory])) for directory, manifest in complete]
    rows += [Row(directory.parent.name, directory.name, damaged_created(directory), dir_size(directory),
                 "[red]damaged manifest.json: not cached; rm --key removes it[/]") for directory in damaged]
    for staging_dir in store.staging_dirs(step):
        note = ("[yellow]being written by a running run[/]" if store.is_being_written(staging_dir) else
                "[yellow]left by a killed run: not cached; rm --key removes it[/]")
        rows.append(Row(*staged_for(staging_dir), modified(staging_dir), dir_size(staging_dir), note, in_staging=True))
    return rows


def total_line(rows: list[Row]) -> str:
    artifacts = [row.size for row in rows if not row.in_staging]
    staged = [row.size for row in rows if row.in_staging]
    total = f"total: {len(artifacts)} artifact(s), {sum(artifacts):,} bytes ({human_size(sum(artifacts))})"
    if staged:
        total += f"; and in staging {sum(staged):,} bytes ({human_size(sum(staged))})"
    return total


class KeyPrefixError(ValueError):
    """rm --key names no artifact, or more than one."""


def select_for_removal(store: ArtifactStore, step: Optional[str], older_than: Optional[str]) -> list[Path]:
    """The artifacts of `step` (or of all steps), damaged ones included; with `older_than` only those created
    before that day, a damaged one dated by damaged_created."""
    complete, damaged = _split_by_manifest(store, step)
    if older_than is None:
        return [directory for directory, _ in complete] + damaged
    cutoff = created_at(older_than)  # a day without a zone, as UTC
    dated = [(directory, manifest["created"]) for directory, manifest in complete]
    dated += [(directory, damaged_created(directory)) for directory in damaged]
    return [directory for directory, created in dated if created_at(created) < cutoff]


def keys_listed(store: ArtifactStore, step: Optional[str]) -> list[tuple[str, str]]:
    """(step, key) of each artifact, damaged ones included, and of each key in staging (a running run's, or what a
    killed run left): each key that ls lists, once."""
    artifacts = {(directory.parent.name, directory.name) for directory, _ in store.entries(step)}
    staged = {staged_for(staging_dir) for staging_dir in store.staging_dirs(step)}
    return sorted(artifacts | staged)


def the_one_with_key(prefix: str, keys: list[tuple[str, str]], step: Optional[str]) -> tuple[str, str]:
    matches = [(step_name, key) for step_name, key in keys if key.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    where = f" of step {step}" if step else ""
    if not matches:
        raise KeyPrefixError(f"no artifact{where} has a key that starts with {prefix}; mambapipe-cache ls lists them")
    names = ", ".join(f"{step_name} {short(key)}" for step_name, key in matches)
    raise KeyPrefixError(f"key {prefix} is ambiguous: {len(matches)} artifacts{where} start with it ({names}); "
                         f"give more of the key{'' if step else ' or --step'}")


def _split_by_manifest(store: ArtifactStore, step: Optional[str]) -> tuple[list[tuple[Path, dict[str, Any]]],
                                                                           list[Path]]:
    """The complete artifacts with their manifests, and the directories whose manifest is damaged."""
    entries = list(store.entries(step))
    return [(d, m) for d, m in entries if m is not None], [d for d, m in entries if m is None]


# Why rm keeps an artifact whose key's lock is held. A run making it again holds the lock until it has; a run that
# finds it made by another meanwhile, and another mambapipe-cache, hold it for a moment, which nothing here tells
# apart from the start of a long hold.
BRIEF_HOLD = "or another run or mambapipe-cache holds its key for a moment"
LOCKED = f"a running run is making it again ({BRIEF_HOLD})"


@dataclass
class Removal:
    removed: list[Path]
    in_use: list[tuple[Path, str]]  # selected, but kept: each with what a running run is doing with it
    leftover_bytes: int  # freed by removing the leftovers of killed runs


def remove(store: ArtifactStore, selected: list[Path], whole_steps: list[str]) -> Removal:
    """Remove the selected artifacts, each under its key's lock and only if no running run reads it (a step
    claims what it reads: store.reading) or makes it again (force=[...] holds its key's lock), or made it again
    since it was selected. From `whole_steps` the leftovers of killed runs go too, but not the staging dir of a
    run still writing."""
    removal = Removal([], [], 0)
    selected_as = {directory: _identity(directory) for directory in selected}
    for directory in selected:
        step_name, key = directory.parent.name, directory.name
        lock = store.try_lock(step_name, key)
        if lock is None:  # not waited for: a run making it again would commit a new artifact for rm to remove
            removal.in_use.append((directory, LOCKED))
            continue
        try:  # try_lock has acquired it: `with lock` would count a second hold and leave one on at its end
            with store.unread(step_name, key) as unread:
                now = _identity(directory)
                if not unread:
                    removal.in_use.append((directory, "a running run is reading it"))
                elif now is not None and now != selected_as[directory]:  # a commit renamed a new one into place
                    removal.in_use.append((directory, "a run has made it again since rm selected it"))
                elif now is not None:  # its lock files stay: deleting one races with a run about to take it
                    store.remove_dir(directory)  # (store._lock_file says how)
                    removal.removed.append(directory)
        finally:
            lock.release()
    for step_name in whole_steps:
        removal.leftover_bytes += store.remove_leftovers(step_name)
    return removal


def _identity(directory: Path) -> Optional[tuple[int, int]]:
    """Which directory is at the path (None: none is): a commit renames another one into place."""
    try:
        found = directory.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_mtime_ns


def remove_key(store: ArtifactStore, prefix: str, step: Optional[str]) -> tuple[Removal, tuple[str, str]]:
    """Remove the artifact whose key starts with `prefix` and what killed runs left in staging for that key (ls
    lists either under it); also the step and key removed."""
    step_name, key = the_one_with_key(prefix, keys_listed(store, step), step)
    artifact = [directory for directory, _ in store.entries(step_name) if directory.name == key]
    removal = remove(store, artifact, [])
    removal.leftover_bytes = store.remove_leftovers(step_name, key)
    written = [staging_dir for staging_dir in store.staging_dirs(step_name) if staged_for(staging_dir)[1] == key]
    if written and not artifact:  # kept by remove_leftovers: a live run holds the key's lock
        removal.in_use.append((store.path(step_name, key), f"a running run is writing it ({BRIEF_HOLD})"))
    return removal, (step_name, key)


def steps_removed_whole(store: ArtifactStore, args: argparse.Namespace) -> list[str]:
    if args.everything:
        return sorted(p.name for p in store.root.glob("*") if p.is_dir() and not p.name.startswith("."))
    return [args.step] if args.step else []


LS_DESCRIPTION = ("List each cached artifact's step, key, creation time (UTC), size and what it is: its model, dtype "
                  "and task, and the fewest settings that set it apart from the artifacts of its step that read alike. "
                  "What does not fit wraps; the creation time, then the size, are left out where they would "
                  "squeeze that. "
                  "Into a file or a pipe the table is 120 columns wide; COLUMNS sets another width "
                  "(COLUMNS=250 mambapipe-cache ls > cache.txt).")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mambapipe-cache", description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawTextHelpFormatter)
    cache_dir_help = f"default: $MAMBAPIPE_CACHE or {DEFAULT_CACHE_DIR}"
    parser.add_argument("--cache-dir", type=Path, help=cache_dir_help)
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    # --cache-dir after the command too (ls --cache-dir X); suppressed when absent there, so that it does not
    # overwrite one given before the command with its default.
    after_command = argparse.ArgumentParser(add_help=False)
    after_command.add_argument("--cache-dir", type=Path, default=argparse.SUPPRESS, help=cache_dir_help)
    commands = parser.add_subparsers(dest="command", required=True)
    ls = commands.add_parser("ls", help="list cached artifacts", description=LS_DESCRIPTION,
                             parents=[after_command])
    ls.add_argument("--step", choices=STEP_NAMES)
    rm = commands.add_parser("rm", help="remove cached artifacts", parents=[after_command])
    what = rm.add_mutually_exclusive_group()
    what.add_argument("--all", action="store_true", dest="everything")
    what.add_argument("--older-than", metavar="YYYY-MM-DD", type=_date,
                      help="artifacts created before this day (UTC); a damaged one by its manifest.json's mtime")
    what.add_argument("--key", type=_key_prefix, help="the artifact whose key starts so (ls prints 12 characters)")
    rm.add_argument("--step", choices=STEP_NAMES, help="every artifact of this step; with --key, where to look")
    args = parser.parse_args(argv)
    if args.command == "rm" and not (args.everything or args.older_than or args.key or args.step):
        rm.error("say what to remove: --all, --step STEP, --older-than YYYY-MM-DD or --key KEY")
    if args.command == "rm" and args.step and (args.everything or args.older_than):
        rm.error("--step goes alone or with --key, not with --all or --older-than")
    return args


def _key_prefix(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]*", text.lower()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a key: keys are hex (0-9, a-f), as ls prints them")
    if len(text) > 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a key: keys are 64 characters at most")
    if len(text) < 4:
        raise argparse.ArgumentTypeError(f"{text!r} is not a key: give the key that ls prints (4 characters or more)")
    return text.lower()


def _date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-01-31") from None


def cache_dir_origin(args: argparse.Namespace) -> str:
    """Where the cache directory came from, as the user would name it."""
    if args.cache_dir:
        return "--cache-dir"
    return "$MAMBAPIPE_CACHE" if "MAMBAPIPE_CACHE" in os.environ else "the default cache directory"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    store = ArtifactStore(args.cache_dir or default_cache_dir())
    if store.root.exists() and not store.root.is_dir():
        # A bad argument, unlike a directory no run has made yet: argparse's form and exit status
        print(f"mambapipe-cache: error: {cache_dir_origin(args)} {store.root} is a file, not a directory; "
              "pass the cache directory", file=sys.stderr)
        return 2
    # The listing and what rm removed go to standard output; warnings and what rm had to keep, to standard error.
    console, errors = make_console(), make_console(stderr=True)
    if not store.root.is_dir():
        print_diagnostic(errors, f"[yellow]{escape(str(store.root))} does not exist[/]: nothing is cached there "
                                 "(a wrong --cache-dir, or no run has used it yet)")
        if args.command == "ls":  # an empty table would add nothing; exit 0 as rm's 'removed 0 artifact(s)' does
            return 0
    if args.command == "ls":
        console.print(list_artifacts(store, args.step, console.width))
        return 0
    return remove_and_report(store, args, console, errors)


def remove_and_report(store: ArtifactStore, args: argparse.Namespace, console: Console, errors: Console) -> int:
    key_named: Optional[tuple[str, str]] = None  # rm --key's step and key
    try:
        if args.key:
            removal, key_named = remove_key(store, args.key, args.step)
        else:
            selected = select_for_removal(store, args.step, args.older_than)
            removal = remove(store, selected, steps_removed_whole(store, args))
    except KeyPrefixError as error:  # a bad argument: argparse's form and exit status
        print(f"mambapipe-cache rm: error: {error}", file=sys.stderr)
        return 2
    # A key that named no artifact and was not kept named what a killed run left: said even where it was empty
    only_leftovers = key_named is not None and not removal.removed and not removal.in_use
    leftovers = (f" and {human_size(removal.leftover_bytes)} left by killed runs"
                 if removal.leftover_bytes or only_leftovers else "")
    named = f" ({key_named[0]} {short(key_named[1])})" if key_named and (removal.removed or leftovers) else ""
    console.print(f"removed {len(removal.removed)} artifact(s){leftovers}{named} from {store.root}")
    for directory, why in removal.in_use:
        print_diagnostic(errors, f"[yellow]kept {directory.parent.name} {short(directory.name)}[/]: {escape(why)}; "
                                 "run the same rm again once it has finished")
    return 1 if removal.in_use else 0


if __name__ == "__main__":
    sys.exit(main())
