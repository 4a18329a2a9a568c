"""In-process fake of the Hugging Face Hub HTTP API, for tests.

No network, no self-hostable Hub: tests point ``HF_ENDPOINT`` here and run the *unmodified*
huggingface_hub / datasets / transformers / peft code over real HTTP. It answers the calls those
libraries make (whoami-v2, repos/create, validate-yaml, preupload, LFS batch /
upload / verify, ndjson commit, repo info, tree, paths-info, HEAD/GET resolve with Range), with the
status codes and X-Error-Code / X-Error-Message headers that ``hf_raise_for_status`` maps to
huggingface_hub's exception classes. Uploads must take the LFS path (``HF_HUB_DISABLE_XET=1``).
Repos live in memory; each commit keeps a ``{path: _Blob}`` snapshot under a fresh 40-hex sha, so
``revision=<sha>`` works. New repos start with a ``.gitattributes`` commit, like on the Hub. Only
``main`` exists: no PRs, no branches, no Xet. API: ``HubServer(users={"hf_alice": "alice"},
read_only_tokens={"hf_ro"})``, ``.start()`` -> base URL, ``.url``, ``.stop()`` (later calls get a
connection error; ``.start()`` again reuses the port and keeps the repos), ``.reset()``,
``.add_file(repo_type, repo_id, path, data)``, ``.files(repo_type, repo_id)`` -> {path: bytes},
``.requests`` -> [(method, url path), ...].
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

MOCK_OAUTH_TOKEN = "mock-oauth-token-for-local-dev"  # what gradio's local OAuth mock sends
REPO_ROUTES = {
    ("revision", "GET"),
    ("tree", "GET"),
    ("paths-info", "POST"),
    ("preupload", "POST"),
    ("commit", "POST"),
}  # /api/{type}s/{ns}/{name}/{route}/{rev}[/{path}] -> _Handler._{route}
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".onnx",
    ".parquet",
    ".arrow",
    ".npy",
    ".npz",
    ".pkl",
    ".msgpack",
    ".model",
    ".zip",
    ".gz",
    ".tar",
    ".zst",
)
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


class HubError(Exception):  # answered as status + {"error": message} + X-Error-Message [+ X-Error-Code]
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _is_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE


class _Blob:
    """File content and the hashes the Hub reports: git_oid is the git blob sha1 of what git stores
    (the pointer file for LFS files); the ETag is the sha256 for LFS files, else the git sha1."""

    def __init__(self, data: bytes, lfs: bool):
        self.data, self.lfs, self.sha256 = data, lfs, hashlib.sha256(data).hexdigest()
        self.pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(data)}\n"
        self.pointer = self.pointer.encode()
        stored = self.pointer if lfs else data
        self.git_oid = hashlib.sha1(b"blob %d\0" % len(stored) + stored).hexdigest()
        self.etag = self.sha256 if lfs else self.git_oid


class _Repo:
    def __init__(self, repo_type: str, repo_id: str, private: bool):
        self.repo_type, self.repo_id, self.private = repo_type, repo_id, private
        self.commits: list[tuple[str, dict]] = []  # [(sha, {path: _Blob}), ...], oldest first; [-1] is main


class _Server(ThreadingHTTPServer):
    # A listen backlog like a real server's, not socketserver's 5: a training process's parallel
    # uploads arriving while the test process held the GIL could overflow it (a checkpoint push
    # failed once in CI with "could not reach the Hub"; not reproduced alone).
    request_queue_size = 128


class HubServer:
    """A fake Hub on 127.0.0.1. ``users``: token -> user name. ``read_only_tokens``: tokens with role
    "read" (403 on writes). ``orgs``: user -> org names it may write to. ``oauth_user``: the user
    behind gradio's mock token (default: the first user, else "user"; ``False`` rejects it)."""

    def __init__(
        self,
        users: dict[str, str] | None = None,
        read_only_tokens=(),
        orgs=None,
        oauth_user: str | bool | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.users = dict(users or {})
        self.read_only_tokens = set(read_only_tokens)
        self.orgs = {u: set(o) for u, o in (orgs or {}).items()}
        self.oauth_user = (next(iter(self.users.values()), "user") if oauth_user is None else oauth_user) or None
        self.host, self.port = host, port
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content, uploaded (maybe not committed yet)
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._counter = itertools.count()
        self._httpd = self._thread = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        """Serve in a daemon thread (no-op if running); returns the base URL for HF_ENDPOINT."""
        if self._httpd is None:
            self._httpd = _Server((self.host, self.port), _Handler)
            self._httpd.hub, self._httpd.open_sockets = self, set()
            self.port = self._httpd.server_address[1]
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="hub-server"
            )  # poll_interval: fast stop()
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections: later requests get a connection error."""
        if self._httpd is not None:
            self._httpd.shutdown()
            for sock in list(self._httpd.open_sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = self._thread = None

    def reset(self) -> None:
        """Forget every repo, LFS object and logged request."""
        with self.lock:
            for store in (self.repos, self.lfs_objects, self.requests):
                store.clear()

    def has_lfs(self, oid: str, size: int) -> bool:
        return oid in self.lfs_objects and len(self.lfs_objects[oid]) == size

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> _Repo:
        with self.lock:
            if (repo_type, repo_id) not in self.repos:
                repo = self.repos[(repo_type, repo_id)] = _Repo(repo_type, repo_id, private)
                self._commit(repo, {".gitattributes": _Blob(GITATTRIBUTES, False)})
            return self.repos[(repo_type, repo_id)]

    def add_file(self, repo_type: str, repo_id: str, path: str, data: bytes | str) -> str:
        """Commit one file (creating a public repo if needed); returns the new commit sha."""
        data = data.encode() if isinstance(data, str) else data
        with self.lock:
            repo = self.create_repo(repo_type, repo_id)
            return self._commit(repo, {**repo.commits[-1][1], path: _Blob(data, _is_lfs(path, len(data)))})

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """{path: bytes} of a repo at ``revision`` (KeyError if the repo does not exist)."""
        with self.lock:
            return {p: b.data for p, b in self.snapshot(self.repos[(repo_type, repo_id)], revision)[1].items()}

    def _commit(self, repo: _Repo, files: dict) -> str:
        sha = hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}/{next(self._counter)}".encode()).hexdigest()
        repo.commits.append((sha, dict(files)))
        return sha

    def snapshot(self, repo: _Repo, revision: str) -> tuple[str, dict]:
        """(sha, {path: _Blob}) for "main" or a full commit sha, else 404 RevisionNotFound."""
        sha, snaps = repo.commits[-1][0] if revision == "main" else revision, dict(repo.commits)
        if sha not in snaps:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, snaps[sha]

    def user_for(self, token: str | None) -> tuple[str | None, str | None]:
        """(user, role) for a token; (None, None) when anonymous; HubError 401 when unknown."""
        if token is None:
            return None, None
        if token in self.users:
            return self.users[token], "read" if token in self.read_only_tokens else "write"
        if token == MOCK_OAUTH_TOKEN and self.oauth_user:
            return self.oauth_user, "write"
        # huggingface_hub checks this exact message so as NOT to turn the 401 into RepositoryNotFoundError
        raise HubError(401, "Invalid credentials in Authorization header")

    def check_write(self, user: str | None, role: str | None, namespace: str) -> None:
        if user is None:
            raise HubError(401, "Invalid username or password.")
        if role != "write":
            raise HubError(403, "This token has read-only access: write operations are not allowed")
        if namespace != user and namespace not in self.orgs.get(user, ()):
            raise HubError(403, f'You don\'t have the rights to write under the namespace "{namespace}"')

    def get_repo(self, repo_type: str, repo_id: str, user, role, write: bool = False) -> _Repo:
        repo, namespace = self.repos.get((repo_type, repo_id)), repo_id.split("/")[0]
        if repo is None or (repo.private and namespace != user and namespace not in self.orgs.get(user, ())):
            # the Hub answers 401 to anonymous callers, 404 to others, for missing and hidden repos alike
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write:
            self.check_write(user, role, namespace)
        return repo


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive like the real Hub: every answer carries Content-Length

    def log_message(self, *args):
        pass

    def setup(self):  # remember open connections so that stop() can cut keep-alive ones
        super().setup()
        self.server.open_sockets.add(self.connection)

    def finish(self):
        super().finish()
        self.server.open_sockets.discard(self.connection)

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
            chunks.append(self.rfile.read(size + 2)[:-2])  # chunk + CRLF
        self.rfile.readline()  # the blank line after the last chunk (httpx sends no trailers)
        return b"".join(chunks)

    def _send(self, status: int, body=b"", headers: dict | None = None, content_type="application/json"):
        body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":  # a HEAD answer has headers only
            self.wfile.write(body)

    def _dispatch(self):
        hub: HubServer = self.server.hub
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.data = self._body()
        # split before unquoting: tree paths and revisions arrive %2F-quoted inside one segment
        segs = [unquote(s) for s in url.path.split("/")[1:]]
        try:
            with hub.lock:
                hub.requests.append((self.command, url.path))
                auth = self.headers.get("Authorization") or ""
                token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
                lfs_href = segs[0] in ("lfs-upload", "lfs-verify")  # hrefs we hand out, called like S3 (no auth)
                self.user, self.role = (None, None) if lfs_href else hub.user_for(token)
                self._route(hub, segs)
        except HubError as e:
            headers = {"X-Error-Message": e.message, **e.headers, **({"X-Error-Code": e.code} if e.code else {})}
            self._send(e.status, {"error": e.message}, headers)
        except ConnectionError:  # the client went away mid-answer
            self.close_connection = True
        except Exception as e:  # a bug or an unexpected payload: 400, not 500 (huggingface_hub retries 5xx)
            self._send(400, {"error": f"test Hub could not handle {self.command} {self.path}: {e!r}"})

    def _route(self, hub: HubServer, segs: list[str]):
        cmd = self.command
        if segs[0] == "api":
            if segs[1:] == ["whoami-v2"] and cmd == "GET":
                return self._whoami(hub)
            if segs[1:] == ["repos", "create"] and cmd == "POST":
                return self._create(hub, json.loads(self.data))
            if segs[1:] == ["validate-yaml"] and cmd == "POST":
                return self._validate_yaml(json.loads(self.data))
            if len(segs) >= 4 and segs[1] in REPO_TYPES:
                rest = segs[4:]
                repo = hub.get_repo(
                    REPO_TYPES[segs[1]],
                    f"{segs[2]}/{segs[3]}",
                    self.user,
                    self.role,
                    write=bool(rest) and rest[0] in ("preupload", "commit"),
                )
                route = (rest[0] if rest else "revision", cmd)  # /api/{t}s/{id}[/{route}/{rev}[/{path}]]
                if route in REPO_ROUTES:
                    rev, path = rest[1] if len(rest) > 1 else "main", "/".join(rest[2:]).strip("/")
                    return getattr(self, "_" + route[0].replace("-", "_"))(hub, repo, rev, path)
        elif segs[0] == "lfs-upload" and cmd == "PUT":  # the upload href we hand out (no auth, like S3)
            if hashlib.sha256(self.data).hexdigest() != segs[1]:
                raise HubError(400, "sha256 of the uploaded content does not match the oid")
            hub.lfs_objects[segs[1]] = self.data
            return self._send(200, b"", content_type="text/plain")
        elif segs[0] == "lfs-verify" and cmd == "POST":
            obj = json.loads(self.data)
            if not hub.has_lfs(obj["oid"], obj["size"]):
                raise HubError(404, f"LFS object {obj['oid']} not found")
            return self._send(200, {"success": True})
        else:  # /{prefix}{ns}/{name}.git/info/lfs/objects/batch and /{prefix}{ns}/{name}/resolve/{rev}/{path}
            rtype = REPO_TYPES[segs[0]] if segs[0] in ("datasets", "spaces") else "model"
            segs = segs[1:] if rtype != "model" else segs
            if len(segs) == 6 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch(hub, rtype, f"{segs[0]}/{segs[1][:-4]}", json.loads(self.data))
            if len(segs) >= 5 and segs[2] == "resolve" and cmd in ("GET", "HEAD"):
                repo = hub.get_repo(rtype, f"{segs[0]}/{segs[1]}", self.user, self.role)
                return self._resolve(hub, repo, segs[3], "/".join(segs[4:]))
        raise HubError(404, f"Not served by the test Hub: {cmd} {self.path}")

    def _whoami(self, hub: HubServer):
        if self.user is None:
            raise HubError(401, "Invalid username or password.")
        orgs = [{"type": "org", "name": o, "roleInOrg": "write"} for o in sorted(hub.orgs.get(self.user, ()))]
        auth = {"type": "access_token", "accessToken": {"displayName": "test-token", "role": self.role}}
        self._send(
            200,
            {
                "type": "user",
                "id": hashlib.md5(self.user.encode()).hexdigest()[:24],
                "name": self.user,
                "fullname": self.user.title(),
                "email": f"{self.user}@example.com",
                "emailVerified": True,
                "isPro": False,
                "avatarUrl": "",
                "orgs": orgs,
                "auth": auth,
            },
        )

    def _create(self, hub: HubServer, payload: dict):
        rtype = payload.get("type") or "model"
        namespace = payload.get("organization") or self.user or ""
        rid = f"{namespace}/{payload['name']}"
        hub.check_write(self.user, self.role, namespace)
        url = f"{hub.url}/{URL_PREFIX[rtype]}{rid}"  # must start with HF_ENDPOINT: RepoUrl parses it
        if (rtype, rid) in hub.repos:  # create_repo(exist_ok=True) swallows this 409, then reads "url" from it
            return self._send(
                409,
                {"error": "You already created this repo", "url": url},
                {"X-Error-Message": "You already created this repo"},
            )
        hub.create_repo(rtype, rid, bool(payload.get("private")) or payload.get("visibility") == "private")
        self._send(200, {"url": url, "name": rid, "id": rid})

    def _validate_yaml(self, payload: dict):
        import yaml  # a dependency of huggingface_hub

        content = payload.get("content", "")
        try:
            yaml.safe_load(content.split("---", 2)[1] if content.startswith("---") else "")
        except yaml.YAMLError as e:  # 400 + errors: huggingface_hub raises ValueError("Invalid metadata ...")
            return self._send(400, {"errors": [{"message": f"Invalid YAML: {e}"}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def _revision(self, hub: HubServer, repo: _Repo, rev: str, path: str):
        sha, snap = hub.snapshot(repo, rev)
        self._send(
            200,
            {
                "_id": sha[:24],
                "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": sha,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": "2024-01-01T00:00:00.000Z",
                "createdAt": "2024-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": p} for p in sorted(snap)],
            },
        )

    @staticmethod
    def _entry(path: str, snap: dict) -> dict | None:  # a tree / paths-info entry
        if path in snap:
            b = snap[path]
            out = {"type": "file", "oid": b.git_oid, "size": len(b.data), "path": path}
            if b.lfs:
                out["lfs"] = {"oid": b.sha256, "size": len(b.data), "pointerSize": len(b.pointer)}
            return out
        if path == "" or any(p.startswith(path + "/") for p in snap):
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        return None

    def _tree(self, hub: HubServer, repo: _Repo, rev: str, path: str):
        sha, snap = hub.snapshot(repo, rev)
        prefix = path + "/" if path else ""
        if path and not any(p.startswith(prefix) for p in snap):
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        recursive = self.query.get("recursive", "false").lower() in ("true", "1")
        names = set()
        for p in snap:
            if p.startswith(prefix):
                parts = p[len(prefix) :].split("/")
                names.update(prefix + "/".join(parts[:i]) for i in range(1, (len(parts) if recursive else 1) + 1))
        entries = [self._entry(n, snap) for n in names]  # one page: no Link header
        self._send(200, sorted(entries, key=lambda e: (e["type"] != "directory", e["path"])))

    def _paths_info(self, hub: HubServer, repo: _Repo, rev: str, path: str):
        _, snap = hub.snapshot(repo, rev)
        entries = [self._entry(p.strip("/"), snap) for p in parse_qs(self.data.decode()).get("paths", [])]
        self._send(200, [e for e in entries if e is not None])

    def _preupload(self, hub: HubServer, repo: _Repo, rev: str, path: str):
        _, snap = hub.snapshot(repo, rev)
        out = []
        for f in json.loads(self.data).get("files", []):
            old = snap.get(f["path"])  # the oid of an existing file lets the client skip unchanged files
            oid = None if old is None else (old.sha256 if old.lfs else old.git_oid)
            mode = "lfs" if _is_lfs(f["path"], f["size"]) else "regular"
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": out, "commitOid": repo.commits[-1][0]})

    def _lfs_batch(self, hub: HubServer, rtype: str, rid: str, payload: dict):
        hub.get_repo(rtype, rid, self.user, self.role, write=payload.get("operation") == "upload")
        objects = []
        for obj in payload.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not hub.has_lfs(obj["oid"], obj["size"]):
                entry["actions"] = {
                    "upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}"},  # no actions: present
                    "verify": {"href": f"{hub.url}/lfs-verify"},
                }
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _commit(self, hub: HubServer, repo: _Repo, rev: str, path: str):
        if self.query.get("create_pr") in ("1", "true"):
            raise HubError(400, "Pull requests are not supported by the test Hub")
        head_sha, snap = hub.snapshot(repo, rev)
        if head_sha != repo.commits[-1][0]:
            raise HubError(400, "The test Hub only commits on top of main")
        files = dict(snap)
        for line in filter(None, (ln.strip() for ln in self.data.splitlines())):
            op = json.loads(line)
            key, value = op["key"], op["value"]
            if key == "header" and value.get("parentCommit") not in (None, head_sha):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                files[value["path"]] = _Blob(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                if value["oid"] not in hub.lfs_objects:
                    raise HubError(400, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = _Blob(hub.lfs_objects[value["oid"]], True)
            elif key == "deletedFile" and files.pop(value["path"], None) is None:
                raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                for p in [p for p in files if p.startswith(value["path"].rstrip("/") + "/")]:
                    del files[p]
            elif key not in ("header", "file", "lfsFile", "deletedFile", "deletedFolder"):
                raise HubError(400, f"Commit operation {key!r} is not supported by the test Hub")
        sha = hub._commit(repo, files)
        self._send(
            200,
            {
                "success": True,
                "commitOid": sha,
                "pullRequestUrl": None,
                "commitUrl": f"{hub.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}",
            },
        )

    def _resolve(self, hub: HubServer, repo: _Repo, rev: str, path: str):
        sha, snap = hub.snapshot(repo, rev)
        if path not in snap:  # X-Repo-Commit lets hf_hub_download cache the file's absence
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        data, total = snap[path].data, len(snap[path].data)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{snap[path].etag}"', "Accept-Ranges": "bytes"}
        status, rng = 200, self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[6:].split(",")[0].strip().partition("-")
            start, end = (int(first), int(last) if last else total - 1) if first else (total - int(last), total - 1)
            start, end = max(start, 0), min(end, total - 1)
            if start >= total or start > end:
                raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{total}"})
            status, data = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        self._send(status, data, headers, content_type="application/octet-stream")
