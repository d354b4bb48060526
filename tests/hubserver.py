"""A hub-shaped HTTP server on 127.0.0.1 for tests (``HF_ENDPOINT`` points at it): the endpoints
huggingface_hub's ``snapshot_download`` / ``hf_hub_download`` call, for repositories made of local files.

* ``GET /api/models/{repo}[/revision/{rev}]``: model info (``sha`` is the commit the revision names);
* ``GET /api/models/{repo}/tree/{rev}``: the file listing (``type``, ``path``, ``size``, ``oid``, ``lfs``);
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``: the file, with ``ETag`` (sha256), ``X-Repo-Commit``,
  ``Content-Length`` and HTTP ranges (``Range: bytes=N-`` -> 206), as the hub serves it.

Errors carry the hub's ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo: 401 without a
token, 403 with one that is not allowed). ``cut[path] = "once"`` drops the connection half-way through the first
download of that file; ``"always"`` does so on every plain download and drops resumed (range) requests at once.
Every request is logged as ``(method, path, range)``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.log: list[tuple[str, str, str | None]] = []
        self.cut: dict[str, str] = {}
        self._cut_done: set[str] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, repo: str, directory: Path, *, refs: tuple[str, ...] = ("main",), gated_token: str | None = None
            ) -> str:
        """Serve ``directory``'s files as one commit of ``repo`` named by ``refs``; returns the commit sha."""
        files = {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))
                 if p.is_file()}
        commit = hashlib.sha1(b"".join(hashlib.sha256(d).digest() + n.encode() for n, d in files.items())).hexdigest()
        entry = self.repos.setdefault(repo, {"commits": {}, "refs": {}, "gated_token": gated_token})
        entry["commits"][commit] = files
        entry["refs"].update(dict.fromkeys(refs, commit))
        return commit

    def requested(self, method: str = "GET") -> list[str]:
        return [path for m, path, _ in self.log if m == method]


def _handler(hub: HubServer) -> type:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            payload = json.dumps({"error": message}).encode()
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(payload)

        def _json(self, data: object) -> None:
            payload = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _serve(self, body: bool) -> None:
            path = urlparse(self.path).path
            hub.log.append((self.command, unquote(path), self.headers.get("Range")))
            parts = [unquote(p) for p in path.strip("/").split("/")]
            api = parts[:2] == ["api", "models"]
            repo_id = "/".join(parts[2:4] if api else parts[:2])
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
            rest = parts[4:] if api else parts[2:]
            if api and not rest:
                rest = ["revision", "main"]
            kind, rev = (rest[0], rest[1]) if len(rest) >= 2 else ("", "")
            commit = repo["refs"].get(rev) or (rev if rev in repo["commits"] else None)
            if commit is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            files = repo["commits"][commit]
            if api and kind == "revision":
                return self._json({"id": repo_id, "sha": commit, "private": False,
                                   "gated": "manual" if repo["gated_token"] else False,
                                   "siblings": [{"rfilename": name} for name in files]})
            if api and kind == "tree":
                return self._json([{"type": "file", "path": name, "size": len(data), "oid": _oid(data)}
                                   | ({"lfs": {"oid": _sha256(data), "size": len(data), "pointerSize": 134}}
                                      if name.endswith(".safetensors") else {}) for name, data in files.items()])
            if api or kind != "resolve":
                return self._error(404, "EntryNotFound", f"no route {path}")
            token = repo["gated_token"]
            given = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            if token and not given:
                return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access "
                                   "to it and be authenticated to access it. Please log in.")
            if token and given != token:
                return self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in "
                                   "the authorized list.")
            name = "/".join(rest[2:])
            if name not in files:
                return self._error(404, "EntryNotFound", f"{name} does not exist on {rev}", commit)
            self._file(files[name], name, commit, body)

        def _file(self, data: bytes, name: str, commit: str, body: bool) -> None:
            start = 0
            ranged = self.headers.get("Range")
            if ranged and body and hub.cut.get(name) == "always":
                return self._drop()
            if ranged:
                start = int(ranged.split("=", 1)[1].split("-", 1)[0])
            self.send_response(206 if ranged else 200)
            self.send_header("ETag", f'"{_sha256(data)}"')
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            mode = hub.cut.get(name)
            if not ranged and (mode == "always" or (mode == "once" and name not in hub._cut_done)):
                hub._cut_done.add(name)
                self.wfile.write(data[: len(data) // 2])
                return self._drop()
            self.wfile.write(data[start:])

        def _drop(self) -> None:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    return Handler


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def vita_repo(dest: Path) -> Path:
    """The embedded bundle as VITA-1.5 publishes its own: three shards (LLM; vision tower + projector; an audio
    encoder's tensors) with an index, plus files a run never needs (a pickle, training leftovers, a TTS decoder)."""
    import torch
    from safetensors.torch import load_file, save_file

    from vita_framework.weights import default_bundle_path

    shutil.copytree(default_bundle_path(), dest)
    state = load_file(str(dest / "model.safetensors"))
    (dest / "model.safetensors").unlink()
    encoders = ("model.vision_tower.", "model.mm_projector.")
    shards = [{k: v for k, v in state.items() if not k.startswith(encoders)},
              {k: v for k, v in state.items() if k.startswith(encoders)},
              {"model.audio_encoder.encoder.global_cmvn.mean": torch.zeros(80)}]
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(dest / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    (dest / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (dest / "scheduler.pt").write_bytes(b"not a checkpoint")
    (dest / "vita_tts_ckpt").mkdir()
    (dest / "vita_tts_ckpt" / "decoder.bin").write_bytes(b"tts")
    return dest
