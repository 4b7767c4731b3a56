"""Pinning a Hugging Face hub repo (a model or a dataset) to a commit at plan time.

A step that reads a hub repo hashes the commit its branch or tag points to into its key and fetches
exactly that commit, so a cached artifact never stands for files the branch has since moved past.
Offline (HF_HUB_OFFLINE) or with the hub unreachable, the local Hugging Face cache's refs (which a run writes once
it has fetched a commit's files) say which commit the revision last pointed to, and its snapshot must hold the files;
with nothing cached, a one-line StepError names the repo and how to do without it.
A hub found unreachable at plan time is not asked again when the step fetches the files
(`use_local_files_only`): huggingface_hub would retry for ~20 s a repo before reading its cache.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import ContextManager, Iterator, Optional
from urllib.parse import urlsplit

from mambapipe.pipeline.disk import filling
from mambapipe.pipeline.step import StepError, first_line

log = logging.getLogger("mambapipe.hub")

# Why this process found the hub unreachable (the first lookup's exception, as _described says it), None while it
# has not.
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
    library resolves the ref offline and names the snapshot folder after the commit. A snapshot that lacks files of
    the repo's tree still names it: allow_patterns fetch part of a repo by design (a tokenizer's files of a model
    repo), and whether it holds the files a step needs is asked when the step fetches them with its patterns."""
    from huggingface_hub import errors, snapshot_download

    # Releases before IncompleteSnapshotError (pyproject allows them) return a partial snapshot's folder as it is
    incomplete_snapshot = getattr(errors, "IncompleteSnapshotError", ())
    try:
        return Path(snapshot_download(repo_id, revision=revision, repo_type=repo_type, local_files_only=True)).name
    except incomplete_snapshot as partial:
        return Path(partial.snapshot_path).name
    except errors.LocalEntryNotFoundError:
        return None


def not_available(repo_id: str, revision: str, without_hub: str, why: Optional[str] = None) -> StepError:
    """The error for a revision neither reachable nor cached; `without_hub` says how to do without it, `why` what
    the hub answered (by default, why it was not asked)."""
    from huggingface_hub import constants

    other_fix = "unset HF_HUB_OFFLINE" if constants.is_offline_mode() else "check the network"
    return StepError(f"cannot reach {repo_id} on the Hugging Face hub ({why or offline_why()}) and its revision "
                     f"{revision} is not in the local cache: {without_hub}, or {other_fix}")


def gated(repo_id: str) -> StepError:
    """The error for a gated repo the token (if any) may not read: the hub shows a gated repo's info to anyone, and
    refuses its files with 401 (no token) or 403 (a token of an account without access)."""
    return StepError(f"{repo_id} is gated: accept its licence on huggingface.co and set HF_TOKEN to a token of that "
                     "account")


def gone(repo_id: str, commit: str, settings: str, exc: Exception) -> StepError:
    """The error for a repo (or commit) the plan saw and the fetch no longer finds: deleted or made private since, so
    running again cannot help."""
    return StepError(f"{repo_id} at {commit}, which the plan found, is no longer on the hub ({_described(exc)}): "
                     f"check {settings}; a repo made private needs HF_TOKEN set to a token that can read it")


def fetch_failed(repo_id: str, commit: str, without_hub: str, exc: Exception) -> StepError:
    """The error for a fetch the hub (or the network, or the disk) broke off; huggingface_hub has removed the file it
    was writing, and the runner the step's staging directory. A hub not reached at all is said as a plan that could
    not reach it says it: huggingface_hub releases differ in whether they raise the connection's error itself or a
    LocalEntryNotFoundError chaining it (not_fetched). A full disk is said by filling_caches around the fetch."""
    if _is_connection_failure(exc):
        return not_available(repo_id, commit, without_hub, _described(exc))
    return StepError(f"fetching {repo_id} at {commit} failed ({_described(exc)}); run again")


def resolve_commit(repo_id: str, revision: Optional[str], repo_type: str, settings: str, without_hub: str) -> str:
    """The commit sha `revision` (default main) of `repo_id` points to: asked of the hub when online,
    read from the local cache's refs when offline or unreachable. For the one-line errors, `settings`
    names the config keys that choose the repo and `without_hub` how to do without it."""
    from huggingface_hub import HfApi, get_token
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
            raise gated(repo_id) from None
        except RevisionNotFoundError:
            raise StepError(f"{repo_id}@{revision} not found on the hub: check {settings}") from None
        except RepositoryNotFoundError:  # the hub answers a private repo it was not shown a token for so too
            private = "" if get_token() else "; a private repo needs HF_TOKEN set to a token that can read it"
            raise StepError(f"{repo_id}@{revision} not found on the hub: check {settings}{private}") from None
        except Exception as exc:  # network down, or the hub failing: what is cached stands in
            failure = _described(exc)
            if _is_network_failure(exc):  # and will when the step fetches; a 429 or 5xx says nothing of the rest
                _found_unreachable(exc)
    commit = cached_commit(repo_id, revision, repo_type)
    if commit is None:
        raise not_available(repo_id, revision, without_hub, failure)
    if failure is not None:
        log.warning("asking the hub for %s@%s failed (%s): pinned to the local cache's %s", repo_id, revision,
                    failure, commit)
    return commit


def remember_ref(repo_id: str, revision: Optional[str], repo_type: str, commit: str) -> None:
    """Once the files of `commit`, which `revision` (None: main) named at plan time, are fetched, write the local
    Hugging Face cache's refs/<revision> as huggingface_hub's own downloads do: the steps fetch by commit, which writes
    no ref, so an offline run could not otherwise pin a revision an online run fetched. Not at plan time: a plan that
    fetches nothing (plan_only) would point the ref at files the cache lacks. Best effort, as the library's: a
    read-only cache keeps the refs it has."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    revision = revision or "main"
    if revision == commit or use_local_files_only():  # offline, the ref was read from the cache
        return
    ref = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type) / "refs" / revision
    try:
        if ref.is_file() and ref.read_text() == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        written = ref.with_name(f"{ref.name}.{os.getpid()}.tmp")
        written.write_text(commit)
        os.replace(written, ref)  # a reader never sees half a commit
    except OSError as err:
        log.warning("cannot record %s@%s in the Hugging Face cache (%s): an offline run will not find it", repo_id,
                    revision, err.strerror or err)


def hub_cache() -> tuple[Path, str]:
    """huggingface_hub's cache directory, and the environment variable that moves it (for filling_caches)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE), moved_by("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")


def moved_by(*variables: str) -> str:
    """The environment variable that moves a Hugging Face cache: the first of its own `variables` (in the order the
    library reads them) that is set, else HF_HOME, below which the hub, datasets and xet caches lie by default."""
    return next((variable for variable in variables if variable in os.environ), "HF_HOME")


def filling_caches(*caches: tuple[Path, str]) -> ContextManager[None]:
    """For a block that writes the Hugging Face caches `caches` ((directory, the variable that moves it), as hub_cache
    gives them): a full disk met there is a one-line DiskFullError naming them and the variables to set."""
    where = " and ".join(str(directory) for directory, _ in caches)
    variables = list(dict.fromkeys(variable for _, variable in caches))
    target = "a directory" if len(variables) == 1 else "directories"
    return filling(f"the Hugging Face cache{'s' if len(caches) > 1 else ''} {where}",
                   f"set {' and '.join(variables)} to {target} on a disk with room")


def not_fetched(repo_id: str, commit: str, without_hub: str, missing: Exception) -> StepError:
    """The error for files of `commit` neither fetched nor cached: huggingface_hub's LocalEntryNotFoundError
    `missing` chains what it met where it asked the hub (the hub gone down since the plan)."""
    asked = not use_local_files_only()
    return not_available(repo_id, commit, without_hub, _described(missing.__cause__ or missing) if asked else None)


def _described(exc: BaseException) -> str:
    """`ConnectError for https://huggingface.co: [Errno -2] Name or service not known`: a network failure names the
    server it was asking (HF_ENDPOINT may name a mirror) where its message does not, as httpx's do not."""
    origin = _asked_origin(exc) if isinstance(exc, Exception) and _is_network_failure(exc) else None
    message = first_line(exc) or "no message"
    if origin is None or urlsplit(origin).hostname in message:
        return f"{type(exc).__name__}: {message}"
    return f"{type(exc).__name__} for {origin}: {message}"


def _asked_origin(exc: Exception) -> Optional[str]:
    """The scheme, host and port of the request the HTTP client's error carries (httpx's and requests' do), or None.
    Never its path and query, nor credentials a proxy's or mirror's URL may hold."""
    try:
        url = urlsplit(str(exc.request.url))  # httpx raises RuntimeError for a request not set, requests has None
    except (AttributeError, RuntimeError):
        return None
    host_and_port = url.netloc.rpartition("@")[2]  # without user:password@
    return f"{url.scheme}://{host_and_port}" if url.scheme and host_and_port else None


def forget_unreachable() -> None:
    """Ask the hub again from now on (a new run finds out for itself whether it can be reached)."""
    global _unreachable
    _unreachable = None


def _is_network_failure(exc: Exception) -> bool:
    """A connection or timeout error, of the socket (OSError) or of the HTTP client huggingface_hub uses; not an
    answer of the hub's, which is an OSError too."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        return False
    return isinstance(exc, OSError) or _is_http_client_transport_error(exc)


def _is_connection_failure(exc: Exception) -> bool:
    """The hub not reached: the socket's connection or timeout error, or the HTTP client's; not a disk's OSError."""
    return isinstance(exc, (ConnectionError, TimeoutError)) or _is_http_client_transport_error(exc)


def _is_http_client_transport_error(exc: Exception) -> bool:
    """httpx's TransportError (connect, read, timeout), by name: the client's package differs between huggingface_hub
    releases (httpx, httpx2)."""
    return any(cls.__name__ == "TransportError" for cls in type(exc).__mro__)


def is_transfer_failure(exc: Exception) -> bool:
    """Whether a fetch broke off for a reason outside mambapipe: an answer of the hub's (a 5xx), the network or the
    disk (an OSError: a full disk, a size that does not match); not a bug."""
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(exc, HfHubHTTPError) or _is_network_failure(exc)


def _found_unreachable(exc: Exception) -> None:
    """Remember `exc` whole, the server it could not reach too: the later lookups, which do not ask, say it."""
    global _unreachable
    _unreachable = _described(exc)
    log.warning("the Hugging Face hub is unreachable (%s): this run will read the local cache only", _unreachable)


@contextmanager
def progress_bars(shown: bool, library: ModuleType | SimpleNamespace) -> Iterator[None]:
    """A Hugging Face library's own progress bars (huggingface_hub.utils' downloads, datasets' split generation,
    transformers' weight loading through transformers_progress_switches) hidden for the block where the run's
    `progress` setting hides mambapipe's; the first two libraries have these switches."""
    if shown or library.are_progress_bars_disabled():
        yield
        return
    library.disable_progress_bars()
    try:
        yield
    finally:
        library.enable_progress_bars()


def transformers_progress_switches() -> SimpleNamespace:
    """transformers' progress-bar switches (its own tqdm's, "Loading weights" among them) under the names
    progress_bars calls: transformers names them in the singular."""
    from transformers.utils import logging as transformers_logging

    return SimpleNamespace(are_progress_bars_disabled=lambda: not transformers_logging.is_progress_bar_enabled(),
                           disable_progress_bars=transformers_logging.disable_progress_bar,
                           enable_progress_bars=transformers_logging.enable_progress_bar)
