"""Unit claims: any number of independent processes share one study folder's units.

A process takes a unit by creating `<record>.claim` exclusively (`O_CREAT | O_EXCL`: of any number
of processes creating it at once, exactly one succeeds), writes who it is into it (host, pid), keeps
its modification time fresh from a background thread while the unit runs, and removes it once the
unit's record is written. A claim is stale, and another process may take the unit over, when its
process is gone (same host, pid no longer running) or when it has not been refreshed for `stale_s`
seconds (a process on another host that crashed, or a machine that went down).

Unlike `jax.distributed` (units divided by position, fixed in advance), claims balance the load:
a process that finishes early takes the next free unit. No coordinator, nothing to start first:
one `jscore study CONFIG --claim` per core or per GPU, now or later, on one machine or on several
that share the output folder.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Optional

REFRESH_S = 30.0
STALE_S = 300.0


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def is_stale(path: str, *, stale_s: float = STALE_S, now: Optional[float] = None) -> bool:
    """Whether the claim at `path` may be taken over: its process is gone (this host, pid not
    running, or this very process from an earlier call), it was not refreshed for `stale_s` s, or
    it cannot be read (a claim being written is at most a moment old, so it is not stale)."""
    try:
        age = (time.time() if now is None else now) - os.path.getmtime(path)
        with open(path) as fh:
            who = json.load(fh)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return age > stale_s
    if age > stale_s:
        return True
    me = _me()
    if who.get("host") == me["host"]:
        return who.get("pid") == me["pid"] or not _alive(int(who.get("pid", -1)))
    return False


class Claim:
    """A held claim: `with claim:` refreshes it every `refresh_s` s and removes it at the end."""

    def __init__(self, path: str, refresh_s: float = REFRESH_S):
        self.path, self.refresh_s = path, refresh_s
        self._stop = threading.Event()
        self._thread = None

    def _beat(self):
        while not self._stop.wait(self.refresh_s):
            try:
                os.utime(self.path)
            except OSError:  # taken over after all (we were too slow): the record decides
                return

    def __enter__(self):
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            with open(self.path) as fh:
                mine = json.load(fh) == _me()
        except (OSError, ValueError):
            mine = False
        if mine:  # never remove a claim another process took over
            os.remove(self.path)


def _create(path: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(_me(), fh)
    return True


def take(path: str, *, stale_s: float = STALE_S, refresh_s: float = REFRESH_S) -> Optional[Claim]:
    """Claim the unit whose claim file is `path` -> a `Claim`, or None when another live process
    holds it. A stale claim is moved aside (`os.rename`: one of several contenders succeeds) and
    the unit claimed afresh."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if _create(path):
        return Claim(path, refresh_s)
    if not is_stale(path, stale_s=stale_s):
        return None
    aside = f"{path}.{socket.gethostname()}.{os.getpid()}.stale"
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another process moved it first; whoever creates it next wins
        pass
    else:
        if not is_stale(aside, stale_s=stale_s):
            # Between our look and the move another process took it over afresh: put its claim
            # back (unless a third has claimed meanwhile: then at worst the unit runs twice, and
            # both write the same record).
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            os.remove(aside)
            return None
        os.remove(aside)
    return Claim(path, refresh_s) if _create(path) else None
