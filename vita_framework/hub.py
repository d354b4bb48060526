"""Hub ids as checkpoints and models: ``org/name`` or ``org/name@revision``, fetched through ``huggingface_hub``.

Downloads go to the standard Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``) with its progress bars, resume
within a download (HTTP ranges) and token handling (``HF_TOKEN``, or ``hf auth login``); only the files a run
needs are asked for (``allow_patterns``, see :mod:`vita_framework.fetch`). With ``HF_HUB_OFFLINE=1`` nothing is
downloaded: a hub id resolves from the cache or fails naming the repository, the revision and the command that
fetches it. ``huggingface_hub`` moves a file into the cache only once it is complete, so a cut download never
leaves a half-written file that a later run would read as a checkpoint.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import HubError

#: a repository id (``org/name``, the hub's characters) and an optional ``@revision`` (branch, tag or commit)
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)(?:@(?P<rev>[^\s@]+))?$")


@dataclass(frozen=True)
class HubRef:
    """A repository on the hub and the revision asked for (None: the default branch)."""

    repo: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision}" if self.revision else self.repo

    @property
    def rev(self) -> str:
        return self.revision or "main"

    def at(self, revision: str) -> HubRef:
        return HubRef(self.repo, revision)

    def commands(self, flag: str = "") -> str:
        """The commands that put this reference into the cache (for offline runs); ``flag``: fetch's --model or
        --config-only."""
        hf = f"hf download {self.repo}" + (f" --revision {self.revision}" if self.revision else "")
        return f"`python -m vita_framework.fetch {self}{' ' + flag if flag else ''}` (or `{hf}`)"


def parse_hub_ref(value: object, *, base: Path | None = None) -> HubRef | None:
    """``value`` as a hub reference, or None when it names a local path (an existing file or directory, beside
    ``base`` or from the current directory, or anything that starts with ``/``, ``.`` or ``~``)."""
    text = str(value).strip() if value is not None else ""
    if not text or text.startswith(("/", ".", "~")):
        return None
    if Path(text).expanduser().exists() or (base is not None and (base / text).exists()):
        return None
    found = _HUB_ID.match(text)
    if found is None or ".." in text:
        return None
    return HubRef(found["repo"], found["rev"])


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def snapshot(ref: HubRef, patterns: list[str], *, what: str, shown: HubRef | None = None, flag: str = ""
             ) -> Path:
    """The cached snapshot directory of ``ref`` holding the files matching ``patterns``: downloaded when online
    (only the missing ones), looked up in the cache when offline. ``shown`` is the reference the user wrote (errors
    name it rather than the resolved commit)."""
    import logging

    from huggingface_hub import snapshot_download

    for name in ("httpx", "httpx2"):  # one INFO line per HTTP request otherwise (the progress bars say enough)
        logging.getLogger(name).setLevel(logging.WARNING)
    offline = is_offline()
    try:
        path = snapshot_download(ref.repo, revision=ref.revision, allow_patterns=list(patterns),
                                 local_files_only=offline)
    except Exception as exc:  # huggingface_hub's and the transport's errors, mapped to what to change
        raise hub_error(exc, shown or ref, what=what, offline=offline, flag=flag) from None
    return Path(path)


def cached_file(ref: HubRef, filename: str) -> Path | None:
    """``filename`` of ``ref`` in the local cache, never asking the network (None when absent)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo, filename, revision=ref.revision)
    return Path(found) if isinstance(found, str) else None


def cache_problem(ref: HubRef, *, what: str, flag: str = "") -> str | None:
    """Validation without the network: offline, the reference's config.json must already be in the cache.
    Online nothing is checked here (the download reports a bad id or revision, before any weight is read)."""
    if not is_offline() or cached_file(ref, "config.json") is not None:
        return None
    return (f"{what}={ref} is a hub id that is not in the local Hugging Face cache ({cache_dir()}) and "
            f"HF_HUB_OFFLINE=1 forbids downloading it; fetch it once with network access: {ref.commands(flag)}, "
            "or unset HF_HUB_OFFLINE")


def hub_error(exc: Exception, ref: HubRef, *, what: str, offline: bool, flag: str = "") -> HubError:
    """huggingface_hub's exception for ``ref`` as a :class:`HubError` saying what to change."""
    from huggingface_hub import errors

    head = f"{what}={ref}"
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:300]
    token = "HF_TOKEN is set but its account is not allowed" if os.environ.get("HF_TOKEN") else "HF_TOKEN is not set"
    if isinstance(exc, errors.GatedRepoError):
        return HubError(f"{head}: '{ref.repo}' is a gated repository and {token}. Ask for access at "
                        f"{endpoint()}/{ref.repo}, then set HF_TOKEN to a token of that account (or `hf auth login`)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return HubError(f"{head}: revision '{ref.rev}' does not exist in '{ref.repo}' on {endpoint()}; name one of "
                        f"its branches, tags or commits ({what}={ref.repo}@main), or drop '@...' for the default "
                        "branch")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return HubError(f"{head}: there is no repository '{ref.repo}' on {endpoint()} (or it is private and "
                        f"{token}), and no local directory '{Path(ref.repo).resolve()}' either. Check the id, or "
                        "point the option at a local directory")
    if isinstance(exc, errors.LocalEntryNotFoundError):
        if offline:
            return HubError(f"{head} is not (completely) in the local Hugging Face cache ({cache_dir()}) for revision "
                            f"'{ref.rev}', and HF_HUB_OFFLINE=1 forbids downloading it. Fetch it once with network "
                            f"access: {ref.commands(flag)}; or unset HF_HUB_OFFLINE")
        return HubError(f"{head}: the hub at {endpoint()} cannot be reached and revision '{ref.rev}' is not "
                        f"(completely) in the local cache ({cache_dir()}): {detail}. Check the network, HF_ENDPOINT "
                        f"and proxy settings, or fetch it where there is network: {ref.commands(flag)}")
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return HubError(f"{head}: the hub refused access ({status}) and {token}; set HF_TOKEN to a token allowed "
                            f"to read '{ref.repo}' (or `hf auth login`)")
        return HubError(f"{head}: the hub at {endpoint()} answered {status}: {detail}; try again later")
    return HubError(f"{head}: the download was cut or failed ({type(exc).__name__}: {detail}). Complete files stay in "
                    f"the cache ({cache_dir()}) and no partial file is ever used; run the same command again to fetch "
                    f"the rest (or {ref.commands(flag)})")
