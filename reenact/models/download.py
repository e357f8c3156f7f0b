"""The checked download client: resumable, bounded, redirect-checked transfers into a cache.

:func:`download` fetches one URL to a file atomically (a ``.part`` beside it, resumed with
an HTTP Range request, renamed into place only once complete and checked against its
sha256). :func:`check_redirect` is the rule for which redirects it follows. The pack
registry (:mod:`reenact.models.registry`) calls it for the components of a pack; this
module knows nothing of packs.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reenact.errors import ChecksumError, DownloadError, ModelError

logger = logging.getLogger(__name__)

__all__ = ["CHUNK_BYTES", "MAX_DOWNLOAD", "REDIRECT_HOSTS", "check_redirect", "download", "download_deadline",
           "ensure_writable"]

#: Bytes read and hashed at a time.
CHUNK_BYTES = 1 << 20
#: Largest download accepted when the pack gives no ``size`` (``REENACT_MAX_DOWNLOAD`` bytes).
MAX_DOWNLOAD = 4 << 30
#: Hosts a download may be redirected to besides its own (``REENACT_DOWNLOAD_HOSTS`` adds more,
#: comma separated). Redirects must also stay on https (an http URL may only stay on http
#: on its own host).
REDIRECT_HOSTS: tuple[str, ...] = ()
#: A transfer is given DEADLINE_BASE seconds plus one second per MIN_RATE bytes it expects
#: (``REENACT_DOWNLOAD_DEADLINE`` seconds instead): 1 GiB gets 4.6 hours, 100 MB 27 minutes.
DEADLINE_BASE = 120.0
MIN_RATE = 64 << 10
#: A transfer that brings fewer than STALL_BYTES in STALL_SECONDS is stopped (a trickle keeps
#: each read under the per-read timeout, so that timeout alone never ends it).
STALL_SECONDS = 60.0
STALL_BYTES = 16 << 10


def download_deadline(expected: int) -> float:
    """Seconds a transfer of ``expected`` bytes may take: ``REENACT_DOWNLOAD_DEADLINE`` when set,
    else :data:`DEADLINE_BASE` plus ``expected`` at :data:`MIN_RATE`."""
    given = os.environ.get("REENACT_DOWNLOAD_DEADLINE")
    if given:
        try:
            seconds = float(given)
        except ValueError:
            seconds = 0.0
        if not seconds > 0:
            raise DownloadError(f"REENACT_DOWNLOAD_DEADLINE must be a number of seconds above 0, got {given!r}")
        return seconds
    return DEADLINE_BASE + expected / MIN_RATE


def max_download() -> int:
    """Largest body accepted when the pack gives no size: ``REENACT_MAX_DOWNLOAD`` bytes when
    set, else :data:`MAX_DOWNLOAD`."""
    given = os.environ.get("REENACT_MAX_DOWNLOAD")
    if not given:
        return MAX_DOWNLOAD
    try:
        value = int(given)
    except ValueError:
        value = 0
    if value <= 0:
        raise DownloadError(f"REENACT_MAX_DOWNLOAD must be a whole number of bytes above 0, got {given!r}; "
                            f"unset it for the default ({MAX_DOWNLOAD} bytes)")
    return value


def ensure_writable(folder: Path, error: type[ModelError] = ModelError) -> None:
    """Create ``folder`` if needed; ``error`` (:class:`ModelError` by default) when it is not writable."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise error(
            f"cache folder {folder} is not writable ({exc.strerror or exc}); set REENACT_HOME "
            "to a writable folder"
        ) from exc


@contextlib.contextmanager
def _progress(total: int | None, initial: int, desc: str, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    bar = tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, desc=desc, disable=not enabled, leave=False
    )
    try:
        yield bar
    finally:
        bar.close()


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to https on the URL's own host or a listed one."""

    def __init__(self, url: str, hosts: tuple[str, ...]) -> None:
        self.origin = urllib.parse.urlsplit(url)
        self.hosts = hosts
        self.final = url

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        check_redirect(self.origin.geturl(), newurl, self.hosts)
        self.final = newurl
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _allowed_hosts(extra: tuple[str, ...] | None) -> tuple[str, ...]:
    env = tuple(h.strip().lower() for h in os.environ.get("REENACT_DOWNLOAD_HOSTS", "").split(",") if h.strip())
    return tuple(h.lower() for h in (extra or ())) + REDIRECT_HOSTS + env


def check_redirect(url: str, newurl: str, hosts: tuple[str, ...] = ()) -> None:
    """Raise :class:`DownloadError` unless a redirect ``url`` -> ``newurl`` may be followed.

    Allowed: https to the URL's own host or one of ``hosts``; an http URL may also stay on
    http on its own host. Refused: a downgrade from https to http, any other scheme, and
    other hosts.
    """
    old, new = urllib.parse.urlsplit(url), urllib.parse.urlsplit(urllib.parse.urljoin(url, newurl))
    same_host = (new.hostname or "").lower() == (old.hostname or "").lower() and new.port == old.port
    if new.scheme == "https":
        ok = same_host or (new.hostname or "").lower() in hosts
    else:
        ok = new.scheme == "http" and old.scheme == "http" and same_host
    if not ok:
        why = ("a downgrade from https to http" if old.scheme == "https" and new.scheme == "http"
               else f"scheme {new.scheme!r}" if new.scheme not in ("http", "https")
               else f"another port ({new.port or new.scheme})" if (new.hostname or "").lower() == (old.hostname or "").lower()
               else f"another host ({new.hostname})")
        raise DownloadError(
            f"refused the redirect of {url} to {new.geturl()}: {why}. Downloads follow redirects only "
            "to https on the same host or a host listed in REENACT_DOWNLOAD_HOSTS"
        )


class _TooSlow(Exception):
    """A transfer past its deadline, or stalled (the message says which)."""


def _open_part(part: Path, append: bool) -> int:
    """A file descriptor for ``part``; never through a symlink, never someone else's file."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(part, flags, 0o600)
    except OSError as exc:
        raise DownloadError(
            f"cannot write {part}: {exc.strerror or exc} (a symlink planted there is not followed); "
            "delete it and run again"
        ) from exc
    st = os.fstat(fd)
    if st.st_nlink > 1:
        os.close(fd)
        raise DownloadError(f"{part} has other hard links; delete it and run again")
    return fd


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    size: int | None = None,
    max_bytes: int | None = None,
    allowed_hosts: tuple[str, ...] | None = None,
) -> str:
    """Download ``url`` to ``dest`` atomically; returns the file's sha256.

    The transfer goes to ``dest + '.part'`` (opened without following symlinks) and
    resumes from it with an HTTP Range request when present. A cut-off transfer raises
    :class:`DownloadError` and keeps the ``.part`` for the next call to resume; a hash
    mismatch deletes it and raises :class:`ChecksumError`; only a complete, checked file is
    renamed to ``dest``. Without ``sha256`` the hash is computed, logged as recorded, and
    returned.

    Time: the transfer stops (the ``.part`` kept for resuming) past :func:`download_deadline`
    or when it brings fewer than :data:`STALL_BYTES` in :data:`STALL_SECONDS`; a stop signal
    keeps the ``.part`` too (the ``models`` command says so).

    Bounds: the body stops at ``size`` when the pack gives it (else at ``max_bytes``,
    default ``REENACT_MAX_DOWNLOAD`` or :data:`MAX_DOWNLOAD`); a longer body, or a ``.part``
    already longer, is discarded with :class:`DownloadError`. Redirects are checked by
    :func:`check_redirect` (``allowed_hosts`` adds hosts); the final URL is logged.
    """
    dest = Path(dest)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise DownloadError(f"refusing to download {url!r}: only http(s) and file URLs are supported")
    limit = max_download()  # a mistyped setting is refused whether or not it applies here
    cap = size if size is not None else (max_bytes or limit)
    hosts = _allowed_hosts(allowed_hosts)
    ensure_writable(dest.parent, DownloadError)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(2):
        if part.is_symlink():
            part.unlink()  # planted: never written through, never resumed from
        have = part.stat().st_size if part.exists() else 0
        if have > cap:
            logger.warning("%s is larger (%d bytes) than the download can be (%d); discarded", part, have, cap)
            part.unlink()
            have = 0
        if size is not None and have == size:
            have = 0  # complete but unchecked: hash it again from a fresh transfer
        h = hashlib.sha256()
        headers = {"User-Agent": "reenact-models/1"}
        if have and scheme != "file":
            headers["Range"] = f"bytes={have}-"
        redirects = _CheckedRedirects(url, hosts)
        opener = urllib.request.build_opener(redirects)
        try:
            resp = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have and attempt == 0:
                part.unlink()  # stale partial longer than the file: start over
                continue
            why = " ".join(str(exc.reason).split())  # urllib's loop message spans lines
            if "infinite loop" in why or "maximum redirection" in why:
                raise DownloadError(
                    f"download of {url} failed: the server redirects in a loop (HTTP {exc.code}); "
                    "check the pack's source URL"
                ) from exc
            raise DownloadError(f"download of {url} failed: HTTP {exc.code} {why}") from exc
        except DownloadError:
            raise
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, DownloadError):
                raise reason from exc
            raise DownloadError(
                f"cannot reach {url}: {reason}; check the network and run again"
            ) from exc
        with resp:
            final = resp.geturl() if hasattr(resp, "geturl") else url
            if final != url:
                logger.info("%s was redirected to %s", url, final)
            status = getattr(resp, "status", 200)
            length = resp.headers.get("Content-Length")
            resume = bool(have) and status == 206
            if resume:
                crange = resp.headers.get("Content-Range", "")
                if not crange.startswith(f"bytes {have}-"):
                    raise DownloadError(f"{url}: server answered range {crange!r} to a request from byte {have}")
                fd = os.open(part, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                with os.fdopen(fd, "rb") as f:
                    while chunk := f.read(CHUNK_BYTES):
                        h.update(chunk)
                logger.info("resuming %s from byte %d", url, have)
            else:
                have = 0
            total = have + int(length) if length is not None and length.isdigit() else None
            if total is not None and total > cap:
                part.unlink(missing_ok=True)
                raise DownloadError(
                    f"{url} announces {total} bytes, more than the {cap} expected; refused (nothing kept)"
                )
            got = have
            allowed = download_deadline((total if total is not None else cap) - have)
            started = window = time.monotonic()
            window_bytes = 0
            read = getattr(resp, "read1", resp.read)  # what has arrived: a trickle returns, never waits for MiBs
            try:
                with os.fdopen(_open_part(part, resume), "wb" if not resume else "ab") as f, _progress(
                    total, have, dest.name, progress
                ) as bar:
                    while chunk := read(min(CHUNK_BYTES, cap + 1 - got)):
                        got += len(chunk)
                        if got > cap:
                            break
                        f.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
                        now, window_bytes = time.monotonic(), window_bytes + len(chunk)
                        if now - started > allowed:
                            raise _TooSlow(f"it took longer than the {allowed:.0f} s allowed for it "
                                           "(REENACT_DOWNLOAD_DEADLINE sets it)")
                        if now - window >= STALL_SECONDS:
                            if window_bytes < STALL_BYTES:
                                raise _TooSlow(f"the server sent {window_bytes} bytes in {now - window:.0f} s")
                            window, window_bytes = now, 0
                    f.flush()
                    os.fsync(f.fileno())
            except _TooSlow as exc:
                raise DownloadError(
                    f"download of {url} stopped after {part.stat().st_size} bytes"
                    f"{f' of {total}' if total else ''}: {exc}; the part is kept in {part.name}: run the same "
                    "command again to resume"
                ) from None
            except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                raise DownloadError(
                    f"download of {url} was cut off after {part.stat().st_size} bytes"
                    f"{f' of {total}' if total else ''}; run the same command again to resume"
                ) from exc
            except OSError as exc:
                raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from exc
        if got > cap:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{url} sent more than the {cap} bytes expected ({'the pack size' if size else 'the cap'}); "
                "the transfer was stopped and discarded"
            )
        if total is not None and got < total:
            raise DownloadError(
                f"download of {url} was cut off after {got} of {total} bytes; run the same command "
                "again to resume"
            )
        if size is not None and got != size:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url} gave {got} bytes, the pack says {size}; discarded")
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256.lower():
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{url}: sha256 {digest} does not match the expected {sha256}; the file was "
                "deleted (a corrupt or changed download). Try again; if it persists, the source changed"
            )
        if sha256 is None:
            logger.warning(
                "no sha256 was known for %s (none is published): trusting this first download (final URL %s, sha256 %s) "
                "and recording it; later downloads must match it. Compare it with a copy you trust.",
                url, final, digest,
            )
        logger.info("downloaded %s (final URL %s, %d bytes, sha256 %s)", url, final, got, digest)
        part.replace(dest)
        return digest
    raise DownloadError(f"download of {url} failed")  # pragma: no cover - loop always returns
