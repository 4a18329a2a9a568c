"""In-process fake of the Hugging Face Hub HTTP API, for tests.

There is no network here and no self-hostable Hub, so the tests point ``HF_ENDPOINT`` at this
server and run the *unmodified* huggingface_hub / datasets / transformers / peft code over real
HTTP. It answers exactly the calls listed in ``/work/shared/notes/hub-api.md`` (whoami-v2,
repos/create, validate-yaml, preupload, LFS batch/upload/verify, ndjson commit, repo info,
tree, paths-info, HEAD/GET resolve with Range) with the status codes and ``X-Error-Code`` /
``X-Error-Message`` headers that ``huggingface_hub.utils.hf_raise_for_status`` maps to its
exception classes. Uploads must use the LFS path (``HF_HUB_DISABLE_XET=1``): Xet is not served.

Repos live in memory: ``{(repo_type, repo_id): _Repo}``; every commit keeps a snapshot
``{path: _Blob}`` under a fresh 40-hex sha, so ``revision=<sha>`` downloads work. New repos start
with a ``.gitattributes`` commit, like the real Hub.

    hub = HubServer(users={"hf_alice": "alice"}, read_only_tokens={"hf_ro"})
    url = hub.start()            # "http://127.0.0.1:PORT"
    hub.add_file("dataset", "alice/quotes", "data/train.jsonl", b'{"q": "hi"}\\n')
    hub.files("dataset", "alice/quotes")   # {path: bytes} at head
    hub.requests                           # [(method, path), ...]
    hub.stop()                   # later requests fail with a connection error; start() again reuses the port
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

MOCK_OAUTH_TOKEN = "mock-oauth-token-for-local-dev"  # what gradio's local OAuth mock injects
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".parquet", ".arrow",
                ".npy", ".npz", ".pkl", ".msgpack", ".model", ".zip", ".gz", ".tar", ".zst")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass(frozen=True)
class _Blob:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n".encode()

    @property
    def git_oid(self) -> str:  # git blob sha1 of what git stores: the pointer for LFS files
        content = self.pointer if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: list = field(default_factory=list)  # [(sha, {path: _Blob}), ...], oldest first

    @property
    def head(self):
        return self.commits[-1]


def _is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_SIZE


class HubServer:
    """A fake Hub. ``users`` maps token -> user name; ``read_only_tokens`` get role "read" (403 on
    writes); ``orgs`` maps user -> org names it may write to; ``oauth_user`` is the user behind
    gradio's mock token (default: the first user, else "user"; ``False`` rejects that token)."""

    def __init__(self, users: dict[str, str] | None = None, read_only_tokens=(), orgs=None,
                 oauth_user: str | bool | None = None, host: str = "127.0.0.1", port: int = 0):
        self.users = dict(users or {})
        self.read_only_tokens = set(read_only_tokens)
        self.orgs = {u: set(o) for u, o in (orgs or {}).items()}
        if oauth_user is None:
            oauth_user = next(iter(self.users.values()), "user")
        self.oauth_user = oauth_user or None
        self.host, self.port = host, port
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content, uploaded but maybe not committed
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._counter = itertools.count()
        self._httpd = self._thread = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        if self._httpd is None:
            self._httpd = _Server((self.host, self.port), _Handler)
            self._httpd.hub = self
            self.port = self._httpd.server_address[1]
            self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name="hub-server")
            self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_connections()  # pooled keep-alive connections must fail too
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = self._thread = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def reset(self) -> None:
        """Forget every repo, LFS object and logged request."""
        with self.lock:
            self.repos.clear()
            self.lfs_objects.clear()
            self.requests.clear()

    # ---------------------------------------------------------------- seeding / inspection
    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> _Repo:
        with self.lock:
            repo = self.repos.get((repo_type, repo_id))
            if repo is None:
                repo = self.repos[(repo_type, repo_id)] = _Repo(repo_type, repo_id, private)
                self._commit(repo, {".gitattributes": _Blob(GITATTRIBUTES, False)})
            return repo

    def add_file(self, repo_type: str, repo_id: str, path: str, data: bytes | str) -> str:
        """Commit one file (creating the repo if needed); returns the new commit sha."""
        data = data.encode() if isinstance(data, str) else data
        with self.lock:
            repo = self.create_repo(repo_type, repo_id)
            return self._commit(repo, {**repo.head[1], path: _Blob(data, _is_lfs(path, data))})

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self.lock:
            snap = self._snapshot(self.repos[(repo_type, repo_id)], revision)[1]
            return {p: b.data for p, b in snap.items()}

    def _commit(self, repo: _Repo, files: dict) -> str:
        sha = hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}/{next(self._counter)}".encode()).hexdigest()
        repo.commits.append((sha, dict(files)))
        return sha

    def _snapshot(self, repo: _Repo, revision: str):
        if revision == "main":
            return repo.head
        for sha, snap in repo.commits:
            if sha == revision:
                return sha, snap
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    # ---------------------------------------------------------------- auth
    def user_for(self, token: str | None) -> tuple[str | None, str | None]:
        """(user, role) for a token; (None, None) when anonymous; HubError 401 when unknown."""
        if token is None:
            return None, None
        if token in self.users:
            return self.users[token], "read" if token in self.read_only_tokens else "write"
        if token == MOCK_OAUTH_TOKEN and self.oauth_user:
            return self.oauth_user, "write"
        # huggingface_hub keys on this exact message to NOT turn the 401 into RepositoryNotFoundError
        raise HubError(401, "Invalid credentials in Authorization header")

    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.orgs.get(user, ()))

    def get_repo(self, repo_type: str, repo_id: str, user, role, write: bool = False) -> _Repo:
        repo = self.repos.get((repo_type, repo_id))
        namespace = repo_id.split("/")[0]
        visible = repo is not None and (not repo.private or self.can_write(user, namespace))
        if not visible:
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write:
            check_write(self, user, role, namespace)
        return repo


def check_write(hub: HubServer, user, role, namespace: str) -> None:
    if user is None:
        raise HubError(401, "Invalid username or password.")
    if role != "write":
        raise HubError(403, "This token has read-only access: write operations are not allowed")
    if not hub.can_write(user, namespace):
        raise HubError(403, f'You don\'t have the rights to write under the namespace "{namespace}"')


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args):
        self.open_sockets: set = set()
        super().__init__(*args)

    def process_request(self, request, client_address):
        self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_connections(self):
        for sock in list(self.open_sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub; every answer has Content-Length

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    # ------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                out += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return out
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None,
              content_type: str = "application/json"):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self):
        hub: HubServer = self.server.hub
        parts = urlsplit(self.path)
        with hub.lock:
            hub.requests.append((self.command, parts.path))
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.data = self._body()
        segs = [unquote(s) for s in parts.path.split("/")[1:]]
        try:
            auth = self.headers.get("Authorization") or ""
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
            self.user, self.role = hub.user_for(token) if not segs[0].startswith("lfs-") else (None, None)
            with hub.lock:
                self._route(hub, segs)
        except HubError as e:
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(e.status, {"error": e.message}, headers)

    def _route(self, hub: HubServer, segs: list[str]):
        cmd = self.command
        if segs[0] == "api":
            if segs[1:] == ["whoami-v2"] and cmd == "GET":
                return self._whoami(hub)
            if segs[1:] == ["repos", "create"] and cmd == "POST":
                return self._create(hub, json.loads(self.data))
            if segs[1:] == ["repos", "delete"] and cmd == "DELETE":
                return self._delete(hub, json.loads(self.data))
            if segs[1:] == ["validate-yaml"] and cmd == "POST":
                return self._validate_yaml(json.loads(self.data))
            if len(segs) >= 4 and segs[1] in REPO_TYPES:
                rtype, rid, rest = REPO_TYPES[segs[1]], f"{segs[2]}/{segs[3]}", segs[4:]
                write = bool(rest) and rest[0] in ("preupload", "commit")
                repo = hub.get_repo(rtype, rid, self.user, self.role, write=write)
                rev = rest[1] if len(rest) > 1 else "main"
                if not rest or (rest[0] == "revision" and cmd == "GET"):
                    return self._repo_info(hub, repo, rev)
                if rest[0] == "tree" and cmd == "GET":
                    return self._tree(repo, rev, "/".join(rest[2:]))
                if rest[0] == "paths-info" and cmd == "POST":
                    return self._paths_info(repo, rev)
                if rest[0] == "preupload" and cmd == "POST":
                    return self._preupload(repo, rev, json.loads(self.data))
                if rest[0] == "commit" and cmd == "POST":
                    return self._commit(hub, repo, rev)
        elif segs[0] == "lfs-upload" and cmd == "PUT":
            if hashlib.sha256(self.data).hexdigest() != segs[1]:
                raise HubError(400, "sha256 of uploaded content does not match the oid")
            hub.lfs_objects[segs[1]] = self.data
            return self._send(200, b"", content_type="text/plain")
        elif segs[0] == "lfs-verify" and cmd == "POST":
            obj = json.loads(self.data)
            if obj["oid"] not in hub.lfs_objects or len(hub.lfs_objects[obj["oid"]]) != obj["size"]:
                raise HubError(404, f"LFS object {obj['oid']} not found")
            return self._send(200, {"success": True})
        else:
            rtype = REPO_TYPES[segs[0]] if segs[0] in ("datasets", "spaces") else "model"
            segs = segs[1:] if rtype != "model" else segs
            if len(segs) >= 6 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch(hub, rtype, f"{segs[0]}/{segs[1][:-4]}")
            if len(segs) >= 5 and segs[2] == "resolve" and cmd in ("GET", "HEAD"):
                repo = hub.get_repo(rtype, f"{segs[0]}/{segs[1]}", self.user, self.role)
                return self._resolve(repo, segs[3], "/".join(segs[4:]))
        raise HubError(404, f"Not served by the test Hub: {cmd} {self.path}")

    # ------------------------------------------------------------ endpoints
    def _whoami(self, hub: HubServer):
        if self.user is None:
            raise HubError(401, "Invalid username or password.")
        orgs = [{"type": "org", "name": o, "roleInOrg": "write"} for o in sorted(hub.orgs.get(self.user, ()))]
        self._send(200, {"type": "user", "id": hashlib.md5(self.user.encode()).hexdigest()[:24],
                         "name": self.user, "fullname": self.user.title(), "email": f"{self.user}@example.com",
                         "emailVerified": True, "isPro": False, "avatarUrl": "", "orgs": orgs,
                         "auth": {"type": "access_token",
                                  "accessToken": {"displayName": "test-token", "role": self.role}}})

    def _create(self, hub: HubServer, payload: dict):
        rtype = payload.get("type") or "model"
        namespace = payload.get("organization") or self.user or ""
        rid = f"{namespace}/{payload['name']}"
        check_write(hub, self.user, self.role, namespace)
        url = f"{hub.url}/{URL_PREFIX[rtype]}{rid}"
        if (rtype, rid) in hub.repos:
            return self._send(409, {"error": "You already created this repo", "url": url},
                              {"X-Error-Message": "You already created this repo"})
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        hub.create_repo(rtype, rid, private)
        self._send(200, {"url": url, "name": rid, "id": rid})

    def _delete(self, hub: HubServer, payload: dict):
        rtype = payload.get("type") or "model"
        rid = f"{payload.get('organization') or self.user}/{payload['name']}"
        hub.get_repo(rtype, rid, self.user, self.role, write=True)
        del hub.repos[(rtype, rid)]
        self._send(200, b"", content_type="text/plain")

    def _validate_yaml(self, payload: dict):
        content = payload.get("content", "")
        if content.startswith("---"):
            try:
                import yaml
                yaml.safe_load(content.split("---", 2)[1])
            except ImportError:
                pass
            except Exception as e:  # yaml.YAMLError
                return self._send(400, {"errors": [{"message": f"Invalid YAML: {e}"}], "warnings": []})
        self._send(200, {"errors": [], "warnings": []})

    def _repo_info(self, hub: HubServer, repo: _Repo, rev: str):
        sha, snap = hub._snapshot(repo, rev)
        self._send(200, {"_id": sha[:24], "id": repo.repo_id, "author": repo.repo_id.split("/")[0],
                         "sha": sha, "private": repo.private, "gated": False, "disabled": False,
                         "downloads": 0, "likes": 0, "tags": [], "lastModified": "2024-01-01T00:00:00.000Z",
                         "createdAt": "2024-01-01T00:00:00.000Z",
                         "siblings": [{"rfilename": p} for p in sorted(snap)]})

    @staticmethod
    def _entry(path: str, snap: dict) -> dict | None:
        if path in snap:
            b = snap[path]
            out = {"type": "file", "oid": b.git_oid, "size": len(b.data), "path": path}
            if b.lfs:
                out["lfs"] = {"oid": b.sha256, "size": len(b.data), "pointerSize": len(b.pointer)}
            return out
        if any(p.startswith(path + "/") for p in snap) or path == "":
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        return None

    def _tree(self, repo: _Repo, rev: str, path: str):
        sha, snap = self.server.hub._snapshot(repo, rev)
        path = path.strip("/")
        prefix = path + "/" if path else ""
        if path and not any(p.startswith(prefix) for p in snap):
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        recursive = self.query.get("recursive", "false").lower() in ("true", "1")
        names = set()
        for p in snap:
            if p.startswith(prefix):
                parts = p[len(prefix):].split("/")
                depth = len(parts) if recursive else 1
                names.update(prefix + "/".join(parts[:i]) for i in range(1, depth + 1))
        entries = [self._entry(n, snap) for n in sorted(names)]
        self._send(200, sorted(entries, key=lambda e: (e["type"] != "directory", e["path"])))

    def _paths_info(self, repo: _Repo, rev: str):
        _, snap = self.server.hub._snapshot(repo, rev)
        form = parse_qs(self.data.decode())
        entries = [self._entry(p.strip("/"), snap) for p in form.get("paths", [])]
        self._send(200, [e for e in entries if e is not None])

    def _preupload(self, repo: _Repo, rev: str, payload: dict):
        _, snap = self.server.hub._snapshot(repo, rev)
        out = []
        for f in payload.get("files", []):
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE
            old = snap.get(f["path"])
            oid = None if old is None else (old.sha256 if old.lfs else old.git_oid)
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": out, "commitOid": repo.head[0]})

    def _lfs_batch(self, hub: HubServer, rtype: str, rid: str):
        payload = json.loads(self.data)
        hub.get_repo(rtype, rid, self.user, self.role, write=payload.get("operation") == "upload")
        objects = []
        for obj in payload.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in hub.lfs_objects or len(hub.lfs_objects[obj["oid"]]) != obj["size"]:
                entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}"},
                                    "verify": {"href": f"{hub.url}/lfs-verify"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _commit(self, hub: HubServer, repo: _Repo, rev: str):
        if self.query.get("create_pr") in ("1", "true"):
            raise HubError(400, "Pull requests are not supported by the test Hub")
        head_sha, snap = hub._snapshot(repo, rev)
        if rev != "main" and head_sha != repo.head[0]:
            raise HubError(400, "Commits are only supported on the main branch by the test Hub")
        files = dict(snap)
        for line in self.data.splitlines():
            if not line.strip():
                continue
            op = json.loads(line)
            key, value = op["key"], op["value"]
            if key == "header":
                if value.get("parentCommit") not in (None, head_sha):
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                data = base64.b64decode(value["content"])
                files[value["path"]] = _Blob(data, False)
            elif key == "lfsFile":
                if value["oid"] not in hub.lfs_objects:
                    raise HubError(400, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = _Blob(hub.lfs_objects[value["oid"]], True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
            else:
                raise HubError(400, f"Unsupported commit operation {key!r} in the test Hub")
        sha = hub._commit(repo, files)
        self._send(200, {"success": True, "commitOid": sha, "pullRequestUrl": None,
                         "commitUrl": f"{hub.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}"})

    def _resolve(self, repo: _Repo, rev: str, path: str):
        sha, snap = self.server.hub._snapshot(repo, rev)
        blob = snap.get(path)
        if blob is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        data, total = blob.data, len(blob.data)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes"}
        status, rng = 200, self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start_s, _, end_s = rng[6:].split(",")[0].partition("-")
            start, end = (int(start_s), int(end_s) if end_s else total - 1) if start_s else (total - int(end_s), total - 1)
            start, end = max(start, 0), min(end, total - 1)
            if start >= total or start > end:
                raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{total}"})
            status, data = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        self._send(status, data, headers, content_type="application/octet-stream")
