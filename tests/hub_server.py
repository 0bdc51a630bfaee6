"""A stand-in for the Hugging Face Hub HTTP API, for tests only: it is not a Hub and is meant for nothing else.

It serves, on 127.0.0.1, the part of the Hub API that huggingface_hub 2.4 calls to create a repo and branches, upload
files, list a revision's files and download them, keeping everything in memory:

    POST /api/repos/create                                 create_repo (an initial commit holds .gitattributes)
    POST /api/validate-yaml                                the model card's metadata, checked before a commit
    GET  /api/models/{repo}[/revision/{rev}]               model_info / repo_info: sha and siblings
    GET  /api/models/{repo}/tree/{rev}[/{path}]            list_repo_tree / list_repo_files (one page)
    POST /api/models/{repo}/branch/{branch}                create_branch
    POST /api/models/{repo}/preupload/{rev}                upload mode of each file: "regular" or "lfs"
    POST /{repo}.git/info/lfs/objects/batch                LFS batch API, "basic" transfer
    PUT  /lfs/{oid}, POST /lfs/{oid}/verify                the LFS upload and verify actions the batch hands out
    POST /api/models/{repo}/commit/{rev}                   the ndjson commit: file, lfsFile, deletedFile/Folder
    HEAD, GET /{repo}/resolve/{rev}/{path}                 file metadata (ETag, X-Repo-Commit, ...) and content

As on the Hub, a file is uploaded as LFS when .gitattributes says so (*.safetensors, ...), when it is binary or when
it is 10 MB or more; other files travel base64-encoded inside the commit. Errors carry the `X-Error-Code` header from
which huggingface_hub raises `RepositoryNotFoundError`, `RevisionNotFoundError` or `EntryNotFoundError`. A request
for anything else answers 501 and, like an error of the server itself, is recorded in `HubServer.failures`.

Not implemented: Xet storage (clients run with `HF_HUB_DISABLE_XET=1`, and then upload through the LFS API), pull
requests, tags, gated repos, pagination and ranges.
"""

import base64
import contextlib
import fnmatch
import hashlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_MIN_SIZE = 10 * 1024 * 1024
# The LFS patterns of the .gitattributes the Hub puts in a new model repo (abridged).
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.ckpt", "*.gz", "*.h5", "*.npy", "*.npz", "*.onnx", "*.pickle", "*.pkl", "*.pt",
                    "*.pth", "*.safetensors", "*.tar", "*.zip", "*tfevents*")
)


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        """The file git holds for an LFS file."""
        lines = ["version https://git-lfs.github.com/spec/v1", f"oid sha256:{self.sha256}", f"size {len(self.content)}"]
        return ("\n".join(lines) + "\n").encode()

    @property
    def blob_id(self) -> str:
        return git_blob_id(self.pointer if self.lfs else self.content)

    @property
    def lfs_info(self) -> dict:
        return {"oid": self.sha256, "size": len(self.content), "pointerSize": len(self.pointer)}

    @property
    def oid(self) -> str:
        """What the client compares with its own file to skip unchanged ones: sha256 for LFS, else the blob id."""
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, dict[str, StoredFile]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    last_modified: str = ""

    def commit_of(self, revision: str) -> str:
        """The commit a branch or commit hash points to, or the 404 the client raises `RevisionNotFoundError` from."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.commits:
            return revision
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, headers: dict | None = None, **body):
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.body = status, code, message, headers or {}, body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def do_GET(self):
        self.server.hub.handle(self, "GET")

    def do_HEAD(self):
        self.server.hub.handle(self, "HEAD")

    def do_POST(self):
        self.server.hub.handle(self, "POST")

    def do_PUT(self):
        self.server.hub.handle(self, "PUT")

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format, *args):
        pass  # requests are recorded in HubServer.requests instead


class HubServer:
    """
    The test Hub. `start()` serves it on 127.0.0.1 (port 0 picks a free port) from a background thread; `url` is the
    value for `HF_ENDPOINT`. Write calls need `Authorization: Bearer <one of tokens>`, as do reads of private repos.
    """

    def __init__(self, tokens: tuple[str, ...] = ("hf_test_token",)):
        self.tokens = set(tokens)
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, bool]] = []  # method, path, whether it came with a token
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._commit_counter = itertools.count()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        repo = r"(?P<repo>[^/]+/[^/]+)"
        self._routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("GET", rf"/api/models/{repo}(?:/revision/(?P<rev>[^/]+))?", self.model_info),
            ("GET", rf"/api/models/{repo}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", self.tree),
            ("POST", rf"/api/models/{repo}/branch/(?P<branch>[^/]+)", self.create_branch),
            ("POST", rf"/api/models/{repo}/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", rf"/api/models/{repo}/commit/(?P<rev>[^/]+)", self.commit),
            ("POST", rf"/{repo}\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/lfs/(?P<oid>[0-9a-f]{64})", self.lfs_upload),
            ("POST", r"/lfs/(?P<oid>[0-9a-f]{64})/verify", self.lfs_verify),
            ("HEAD", rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve),
            ("GET", rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve),
        ]

    # Lifecycle

    def start(self, port: int = 0) -> "HubServer":
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="test-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    @contextlib.contextmanager
    def stopped(self):
        """Stop serving for the duration of the block (the repos are kept), then serve again on the same port."""
        port = self.port
        self.stop()
        try:
            yield
        finally:
            self.start(port)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # Dispatch

    def handle(self, request: Handler, method: str) -> None:
        url = urlsplit(request.path)
        body = request.read_body() if method in ("POST", "PUT") else b""
        self.requests.append((method, url.path, "Authorization" in request.headers))
        headers = {}
        try:
            with self._lock:
                for route_method, pattern, endpoint in self._routes:
                    match = re.fullmatch(pattern, url.path)
                    if route_method == method and match:
                        arguments = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                        query = {k: v[0] for k, v in parse_qs(url.query).items()}
                        status, headers, content = endpoint(request, body, query, **arguments)
                        break
                else:
                    self.failures.append(f"{method} {url.path}: not implemented")
                    raise HubError(501, None, f"The test Hub server does not implement {method} {url.path}.")
        except HubError as error:
            status, headers, content = self._error_response(error)
        except Exception as error:  # a bug of this server: answer, and let the test see it
            self.failures.append(f"{method} {url.path}: {error!r}")
            status, headers, content = self._error_response(HubError(500, None, repr(error)))
        request.send_response(status)
        headers.setdefault("Content-Length", str(len(content)))
        for name, value in headers.items():
            request.send_header(name, value)
        request.end_headers()
        if method != "HEAD":
            request.wfile.write(content)

    @staticmethod
    def _error_response(error: HubError):
        headers = {"Content-Type": "application/json", "X-Error-Message": error.message, **error.headers}
        if error.code:
            headers["X-Error-Code"] = error.code
        return error.status, headers, json.dumps({"error": error.message, **error.body}).encode()

    @staticmethod
    def _json(data, status: int = 200, content_type: str = "application/json"):
        return status, {"Content-Type": content_type}, json.dumps(data).encode()

    def _authorized(self, request: Handler) -> bool:
        return request.headers.get("Authorization", "").removeprefix("Bearer ") in self.tokens

    def _check_token(self, request: Handler) -> None:
        if not self._authorized(request):
            raise HubError(401, None, "Invalid credentials in Authorization header")

    def _repo(self, request: Handler, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        if repo.private and not self._authorized(request):  # as the Hub: no hint that the repo exists
            raise HubError(401, "RepoNotFound", "Repository not found")
        return repo

    def _new_commit(self, repo: Repo, files: dict[str, StoredFile], message: str) -> str:
        digest = hashlib.sha1(f"{repo.repo_id}\n{next(self._commit_counter)}\n{message}".encode())
        for path, stored in sorted(files.items()):
            digest.update(f"{path} {stored.oid}\n".encode())
        sha = digest.hexdigest()
        repo.commits[sha] = files
        repo.last_modified = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return sha

    # Repos and branches

    def create_repo(self, request, body, query):
        self._check_token(request)
        payload = json.loads(body)
        if payload.get("type", "model") != "model":
            raise HubError(400, None, "The test Hub server only hosts model repos.")
        repo_id = f"{payload.get('organization') or 'test-user'}/{payload['name']}"
        if repo_id in self.repos:  # the client reads `url` from this answer too, when it passed exist_ok=True
            raise HubError(409, None, "You already created this model repo", url=f"{self.url}/{repo_id}")
        repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        initial = self._new_commit(repo, {".gitattributes": StoredFile(GITATTRIBUTES.encode(), lfs=False)}, "initial")
        repo.branches["main"] = initial
        self.repos[repo_id] = repo
        return self._json({"url": f"{self.url}/{repo_id}", "name": repo_id})

    def create_branch(self, request, body, query, repo, branch):
        self._check_token(request)
        repo = self._repo(request, repo)
        if branch in repo.branches:
            raise HubError(409, None, f"Reference refs/heads/{branch} already exists")
        starting_point = json.loads(body or b"{}").get("startingPoint", "main")
        repo.branches[branch] = repo.commit_of(starting_point)
        return self._json({})

    # Reading a revision

    def model_info(self, request, body, query, repo, rev="main"):
        repo = self._repo(request, repo)
        sha = repo.commit_of(rev)
        siblings = [{"rfilename": path} for path in sorted(repo.commits[sha])]
        return self._json({
            "id": repo.repo_id, "modelId": repo.repo_id, "sha": sha, "private": repo.private, "disabled": False,
            "gated": False, "lastModified": repo.last_modified, "tags": [], "siblings": siblings,
        })

    def tree(self, request, body, query, repo, rev, path=""):
        repo = self._repo(request, repo)
        files = repo.commits[repo.commit_of(rev)]
        recursive = query.get("recursive", "").lower() in ("true", "1")
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        entries = {}
        for file_path, stored in sorted(files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "oid": git_blob_id(folder.encode()), "size": 0,
                                                "path": folder})
            if recursive or len(parts) == 1:
                entry = {"type": "file", "oid": stored.blob_id, "size": len(stored.content), "path": file_path}
                if stored.lfs:
                    entry["lfs"] = stored.lfs_info
                entries[file_path] = entry
        if prefix and not entries:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}")
        return self._json(list(entries.values()))

    def resolve(self, request, body, query, repo, rev, path):
        repo = self._repo(request, repo)
        sha = repo.commit_of(rev)
        stored = repo.commits[sha].get(path)
        if stored is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", {"X-Repo-Commit": sha})
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(stored.content)),
            "ETag": f'"{stored.sha256 if stored.lfs else stored.blob_id}"',
            "X-Repo-Commit": sha,
        }
        if stored.lfs:  # the headers the Hub sends with an LFS file's redirect to its storage
            headers.update({"X-Linked-Etag": f'"{stored.sha256}"', "X-Linked-Size": str(len(stored.content))})
        return 200, headers, stored.content

    # Uploading

    def validate_yaml(self, request, body, query):
        content = json.loads(body)["content"]
        if content.startswith("---") and "\n---" not in content[3:]:
            return self._json({"errors": [{"message": "The metadata block is not closed by ---"}]}, status=400)
        return self._json({"errors": [], "warnings": []})

    def preupload(self, request, body, query, repo, rev):
        self._check_token(request)
        repo = self._repo(request, repo)
        files = repo.commits[repo.commit_of(rev)]
        gitattributes = files.get(".gitattributes", StoredFile(b"", lfs=False)).content.decode()
        lfs_patterns = [line.split()[0] for line in gitattributes.splitlines() if "filter=lfs" in line]
        answers = []
        for item in json.loads(body)["files"]:
            name = item["path"].rsplit("/", 1)[-1]
            lfs = (
                item["size"] >= LFS_MIN_SIZE
                or b"\0" in base64.b64decode(item["sample"])
                or any(fnmatch.fnmatch(item["path"] if "/" in p else name, p) for p in lfs_patterns)
            )
            existing = files.get(item["path"])
            answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": existing.oid if existing else None})
        return self._json({"files": answers})

    def lfs_batch(self, request, body, query, repo):
        self._check_token(request)
        self._repo(request, repo)
        objects = []
        for item in json.loads(body)["objects"]:
            answer = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if len(self.lfs_objects.get(item["oid"], b"")) != item["size"]:
                answer["actions"] = {
                    "upload": {"href": f"{self.url}/lfs/{item['oid']}"},
                    "verify": {"href": f"{self.url}/lfs/{item['oid']}/verify"},
                }
            objects.append(answer)
        return self._json({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, request, body, query, oid):
        # The href is the credential, as with the Hub's pre-signed storage URLs: the client sends no token here.
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, None, f"The uploaded content does not have the sha256 {oid}")
        self.lfs_objects[oid] = body
        return 200, {}, b""

    def lfs_verify(self, request, body, query, oid):
        self._check_token(request)
        if len(self.lfs_objects.get(oid, b"")) != json.loads(body)["size"]:
            raise HubError(404, None, f"LFS object {oid} was not uploaded")
        return self._json({})

    def commit(self, request, body, query, repo, rev):
        self._check_token(request)
        repo = self._repo(request, repo)
        if rev not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}: commits go to a branch")
        files = dict(repo.commits[repo.branches[rev]])
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, repo.branches[rev]):
            raise HubError(412, None, f"{rev} has moved on from the parent commit {header['parentCommit']}")
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    raise HubError(400, None, f"LFS object {value['oid']} for {value['path']} was not uploaded")
                files[value["path"]] = StoredFile(self.lfs_objects[value["oid"]], lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {value['path']}")
            elif key == "deletedFolder":
                files = {p: f for p, f in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, None, f"The test Hub server does not know the commit operation {key!r}")
        sha = self._new_commit(repo, files, header["summary"])
        repo.branches[rev] = sha
        return self._json({"success": True, "commitOid": sha, "commitUrl": f"{self.url}/{repo.repo_id}/commit/{sha}"})
