"""The command line's checks (mambapipe.app runs them before Hydra composes) as functions of argv, for their tests."""

from __future__ import annotations

from typing import Callable, Optional

from mambapipe.cli_keys import ParsedCommandLine, parse_command_line


def on_argv(check: Callable[[ParsedCommandLine], Optional[str]]) -> Callable[[list[str]], Optional[str]]:
    """`check` as the app runs it on the command line `argv`: parsed once for all the checks, and none of them run
    where Hydra is to read the line itself (parse_command_line's None)."""
    def problem(argv: list[str]) -> Optional[str]:
        args = parse_command_line(argv)
        return args and check(args)

    return problem
