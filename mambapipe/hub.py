"""Pinning a Hugging Face hub repo (a model or a dataset) to a commit at plan time.

A step that reads a hub repo hashes the commit its branch or tag points to into its key and fetches
exactly that commit, so a cached artifact never stands for files the branch has since moved past.
Offline (HF_HUB_OFFLINE) or with the hub unreachable, the local Hugging Face cache's refs say which
commit was fetched last; with nothing cached, a one-line StepError names the repo and how to do without it.
A hub found unreachable at plan time is not asked again when the step fetches the files
(`use_local_files_only`): huggingface_hub would retry for ~20 s a repo before reading its cache.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Iterator, Optional

from mambapipe.pipeline.step import StepError, first_line

log = logging.getLogger("mambapipe.hub")

# Why this process found the hub unreachable (the first lookup's exception), None while it has not.
_unreachable: Optional[str] = None


def use_local_files_only() -> bool:
    """Whether fetching should read the local cache only: offline, or the hub found unreachable here."""
    from huggingface_hub import constants

    return constants.is_offline_mode() or _unreachable is not None


def offline_why() -> str:
    """Why the hub is not asked, for a message: HF_HUB_OFFLINE, or what the lookup that failed raised."""
    from huggingface_hub import constants

    return "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else f"unreachable: {_unreachable}"


def cached_commit(repo_id: str, revision: str, repo_type: str) -> Optional[str]:
    """The commit a branch/tag points to in the local Hugging Face cache, if it was downloaded: the
    library resolves the ref offline and names the snapshot folder after the commit."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, repo_type=repo_type, local_files_only=True)).name
    except LocalEntryNotFoundError:
        return None


def not_available(repo_id: str, revision: str, without_hub: str, why: Optional[str] = None) -> StepError:
    """The error for a revision neither reachable nor cached; `without_hub` says how to do without it, `why` what
    the hub answered (by default, why it was not asked)."""
    from huggingface_hub import constants

    other_fix = "unset HF_HUB_OFFLINE" if constants.is_offline_mode() else "check the network"
    return StepError(f"cannot reach {repo_id} on the Hugging Face hub ({why or offline_why()}) and its revision "
                     f"{revision} is not in the local cache: {without_hub}, or {other_fix}")


def resolve_commit(repo_id: str, revision: Optional[str], repo_type: str, settings: str, without_hub: str) -> str:
    """The commit sha `revision` (default main) of `repo_id` points to: asked of the hub when online,
    read from the local cache's refs when offline or unreachable. For the one-line errors, `settings`
    names the config keys that choose the repo and `without_hub` how to do without it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:  # else it surfaces from the cache lookup below as an unexpected crash
        raise StepError(f"{repo_id!r} is not a hub repo id ({exc}); check {settings}") from None
    revision = revision or "main"
    failure = None
    if not use_local_files_only():
        try:  # a commit too: whether the hub has it, and whether the hub can be reached at all
            return HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type).sha
        except GatedRepoError:
            raise StepError(f"{repo_id} is gated: accept its licence on huggingface.co and set HF_TOKEN") from None
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise StepError(f"{repo_id}@{revision} not found on the hub: check {settings}") from None
        except Exception as exc:  # network down, or the hub failing: what is cached stands in
            failure = f"{type(exc).__name__}: {first_line(exc) or 'no message'}"
            if _is_network_failure(exc):  # and will when the step fetches; a 429 or 5xx says nothing of the rest
                _found_unreachable(exc)
    commit = cached_commit(repo_id, revision, repo_type)
    if commit is None:
        raise not_available(repo_id, revision, without_hub, failure)
    if failure is not None:
        log.warning("asking the hub for %s@%s failed (%s): pinned to the local cache's %s", repo_id, revision,
                    failure, commit)
    return commit


def forget_unreachable() -> None:
    """Ask the hub again from now on (a new run finds out for itself whether it can be reached)."""
    global _unreachable
    _unreachable = None


def _is_network_failure(exc: Exception) -> bool:
    """A connection or timeout error, of the socket (OSError) or of the HTTP client huggingface_hub uses (httpx's
    TransportError, by name: the client's package differs between huggingface_hub releases); not an answer of
    the hub's, which is an OSError too."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        return False
    return isinstance(exc, OSError) or any(cls.__name__ == "TransportError" for cls in type(exc).__mro__)


def _found_unreachable(exc: Exception) -> None:
    global _unreachable
    _unreachable = type(exc).__name__
    log.warning("the Hugging Face hub is unreachable (%s): this run will read the local cache only", _unreachable)


@contextmanager
def progress_bars(shown: bool, library: ModuleType) -> Iterator[None]:
    """A Hugging Face library's own progress bars (huggingface_hub.utils' downloads, datasets' split generation)
    hidden for the block where the run's `progress` setting hides mambapipe's; both libraries have these switches."""
    if shown or library.are_progress_bars_disabled():
        yield
        return
    library.disable_progress_bars()
    try:
        yield
    finally:
        library.enable_progress_bars()
