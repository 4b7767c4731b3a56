"""A Hugging Face hub on 127.0.0.1 for tests: the few endpoints huggingface_hub 2.4.0 asks for what mambapipe does.

mambapipe pins a revision with `HfApi().repo_info` (GET /api/{models,datasets}/{repo}/revision/{rev}) and fetches
with `snapshot_download` at that commit, which lists the tree (GET /api/{type}s/{repo}/tree/{commit}?recursive=True)
and then, per file the allow patterns select, asks HEAD and GET /{repo}/resolve/{commit}/{path} (dataset repos
under /datasets/{repo}/resolve/...). A HEAD must carry X-Repo-Commit and an ETag (the library refuses a file without
them) and a Content-Length (the size it checks the download against). Errors are told apart as the hub tells them:
by the X-Error-Code header (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo). A gated repo answers its
info and tree as the hub does, and 401 (no token) or 403 (a token without access) for its files.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, unquote, urlsplit

_API = re.compile(r"^/api/(?P<type>models|datasets)/(?P<repo>[^/]+/[^/]+)/(?P<kind>revision|tree)/(?P<rev>[^/]+)"
                  r"(?:/(?P<folder>.+))?$")
_RESOLVE = re.compile(r"^/(?P<type>datasets/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


@dataclass
class Repo:
    """A repo at one commit: its files by path, the branches and tags that point to the commit, whether it is gated
    (then its files need a token the hub grants), and which files fail to download."""
    files: dict[str, bytes]
    commit: str
    refs: tuple[str, ...] = ("main",)
    gated: bool = False
    failing: dict[str, int] = field(default_factory=dict)  # files whose GET answers this status (their HEAD 200)

    @classmethod
    def of_directory(cls, directory: Path, commit: str, **options) -> Repo:
        return cls({path.relative_to(directory).as_posix(): path.read_bytes()
                    for path in sorted(directory.rglob("*")) if path.is_file()}, commit, **options)


@dataclass
class Request:
    method: str
    path: str
    authorization: Optional[str]


@dataclass
class FakeHub:
    """`repos` by (repo_type, repo_id), repo_type "model" or "dataset"; `granted_tokens` open gated repos.
    Every request is kept in `requests`, in order."""
    repos: dict[tuple[str, str], Repo]
    granted_tokens: tuple[str, ...] = ()
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def paths(self, method: str = "GET") -> list[str]:
        return [request.path for request in self.requests if request.method == method]


class _Handler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.0"  # a connection per request: once the hub is shut down, nothing answers

    def log_message(self, *args) -> None:  # the test's output is the library's, not the server's
        pass

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        authorization = self.headers.get("Authorization")
        self.fake_hub.requests.append(Request(self.command, path, authorization))
        if (match := _API.match(path)) and self.command == "GET":
            recursive = parse_qs(url.query).get("recursive") == ["True"]
            return self._api(match["type"].removesuffix("s"), match["repo"], match["kind"], match["rev"],
                             match["folder"] or "", recursive)
        if match := _RESOLVE.match(path):
            return self._resolve("dataset" if match["type"] else "model", match["repo"], match["rev"], match["path"],
                                 authorization, send_body)
        self._error(404, "", "no such endpoint")

    def _find(self, repo_type: str, repo_id: str, revision: str) -> Optional[Repo]:
        """The repo at `revision`, or None once the error is sent."""
        repo = self.fake_hub.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if revision not in (repo.commit, *repo.refs):
            self._error(404, "RevisionNotFound", "Invalid rev id: " + revision, repo.commit)
            return None
        return repo

    def _api(self, repo_type: str, repo_id: str, kind: str, revision: str, folder: str, recursive: bool) -> None:
        repo = self._find(repo_type, repo_id, revision)
        if repo is None:
            return
        if kind == "revision":
            body = {"id": repo_id, "sha": repo.commit, "private": False, "gated": "manual" if repo.gated else False,
                    "siblings": [{"rfilename": name} for name in repo.files]}
        else:
            body = _tree(repo.files, folder, recursive)
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, send_body=True)

    def _resolve(self, repo_type: str, repo_id: str, revision: str, name: str, authorization: Optional[str],
                 send_body: bool) -> None:
        repo = self._find(repo_type, repo_id, revision)
        if repo is None:
            return
        if repo.gated and (authorization or "").removeprefix("Bearer ") not in self.fake_hub.granted_tokens:
            status = 403 if authorization else 401
            return self._error(status, "GatedRepo", f"Access to model {repo_id} is restricted.", repo.commit)
        if name not in repo.files:
            return self._error(404, "EntryNotFound", f"{name} does not exist", repo.commit)
        if send_body and name in repo.failing:
            return self._error(repo.failing[name], "", "the hub is having a bad day")
        data = repo.files[name]
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Content-Type": "application/octet-stream"}
        self._send(200, data, headers, send_body)

    def _error(self, status: int, code: str, message: str, commit: Optional[str] = None) -> None:
        headers = {"X-Error-Message": message, "Content-Type": "application/json",
                   **({"X-Error-Code": code} if code else {}), **({"X-Repo-Commit": commit} if commit else {})}
        self._send(status, json.dumps({"error": message}).encode(), headers, send_body=self.command != "HEAD")

    def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def _tree(files: dict[str, bytes], folder: str, recursive: bool) -> list[dict]:
    """The tree listing of `folder` ('' for the root): its files and folders, or with `recursive` everything below
    it (files only: snapshot_download keeps those alone)."""
    prefix = folder + "/" if folder else ""
    entries, folders = [], set()
    for name, data in files.items():
        if not name.startswith(prefix):
            continue
        below = name[len(prefix):]
        if recursive or "/" not in below:
            entries.append({"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()})
        elif (child := prefix + below.split("/")[0]) not in folders:
            folders.add(child)
            entries.append({"type": "directory", "path": child, "oid": hashlib.sha1(child.encode()).hexdigest()})
    return entries
