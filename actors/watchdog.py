"""A host's watchdog: a turn that does not end is ended with its process, and the message that
did it is quarantined as poison after a few tries.

The bounds of :mod:`parlour.flow.bounds` end a turn within its budget wherever Python runs. C
code in the middle of one operation cannot be interrupted, though, and a bound nobody foresaw
could let a turn run on, stalling every tenant of the host. No thread of the host can help
then (the stuck turn holds the GIL), so the watch is kept from outside:

- before each turn the host writes into a small memory-mapped file when the turn started and
  which message it runs (:meth:`TurnWatch.begin`, well under a microsecond), and clears it
  after (:meth:`TurnWatch.end`);
- a watchdog *process* (:func:`watch`, this file run as a script, with nothing but the
  standard library) reads that file every ``period_s``; a turn running longer than
  ``limit_s`` gets its host SIGKILLed, and Ray starts the host again;
- the host that starts finds what was in flight when its predecessor died (killed by the
  watchdog, the kernel's OOM killer, a crash) and counts a try against that message in a
  journal beside the file (:meth:`TurnWatch.open`);
- a message whose tries reach ``tries`` is not run again (:meth:`TurnWatch.poisoned`): the
  host fails its conversation instead, as the interpreter fails one that crashes, and counts
  it in ``parlour_host_quarantined_total``.

The files live on the host's machine (``HostConfig.watch_dir``): a host that Ray restarts on
another node starts counting afresh there, so a poison message costs at most ``tries``
restarts per node.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

SLOT_BYTES = 4096
_HEAD = struct.Struct("<dI")  # when the turn started (CLOCK_MONOTONIC, 0.0: none), payload length
_MAX_PAYLOAD = SLOT_BYTES - _HEAD.size
MAX_SUSPECTS = 256
"""Messages the journal remembers; the oldest is forgotten first."""


class TurnWatch:
    """The host's side: the slot it writes each turn into, and the journal of tries.

    >>> watch = TurnWatch(Path("/tmp/parlour-watch/parlour-host-0"), tries=2)
    >>> watch.open()                    # the turn in flight when the last process died, if any
    >>> watch.begin("demo/web/u1", "m-1"); ...; watch.end()
    """

    def __init__(self, path: Path, *, tries: int = 2, forget_s: float = 86_400.0):
        self.path = path
        self.tries = tries
        self.forget_s = forget_s
        self.suspects: dict[str, list[float]] = {}  # "key\0token" -> [tries, when first seen]
        self._slot: mmap.mmap | None = None
        self._watchdog: subprocess.Popen | None = None

    def open(self) -> str | None:
        """Map the slot (made if new) and read the journal; a turn the slot shows in flight
        died with its process: count a try against it, and return it. Opened once."""
        if self._slot is not None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < SLOT_BYTES:
                os.ftruncate(fd, SLOT_BYTES)
            self._slot = mmap.mmap(fd, SLOT_BYTES)
        finally:
            os.close(fd)
        self.suspects = self._load()
        started, length = _HEAD.unpack_from(self._slot, 0)
        if not started:
            return None
        died = bytes(self._slot[_HEAD.size:_HEAD.size + min(length, _MAX_PAYLOAD)]).decode("utf-8", "replace")
        count = self.suspects.setdefault(died, [0, time.time()])
        count[0] += 1
        self._save()
        self.end()
        return died

    def begin(self, key: str, token: str) -> None:
        slot = self._slot
        if slot is None:
            return
        payload = f"{key}\0{token}".encode("utf-8", "surrogatepass")[:_MAX_PAYLOAD]
        slot[_HEAD.size:_HEAD.size + len(payload)] = payload
        _HEAD.pack_into(slot, 0, time.monotonic(), len(payload))

    def end(self) -> None:
        if self._slot is not None:
            _HEAD.pack_into(self._slot, 0, 0.0, 0)

    def poisoned(self, key: str, token: str) -> int:
        """How often ``token`` of ``key`` was in flight when its host died, once that reached
        ``tries``; else 0."""
        entry = self.suspects.get(f"{key}\0{token}")
        return int(entry[0]) if entry is not None and entry[0] >= self.tries else 0

    def start_watchdog(self, pid: int, limit_s: float, period_s: float) -> None:
        """Start the process that kills ``pid`` when one of its turns runs past ``limit_s``."""
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, str(self.path), str(pid), repr(limit_s), repr(period_s)],
            stdin=subprocess.DEVNULL, close_fds=True)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.terminate()
            self._watchdog.wait(5)
            self._watchdog = None
        if self._slot is not None:
            self.end()
            self._slot.close()
            self._slot = None

    def _journal(self) -> Path:
        return self.path.with_name(self.path.name + ".journal")

    def _load(self) -> dict[str, list[float]]:
        try:
            saved = json.loads(self._journal().read_text())
        except (OSError, ValueError):
            return {}
        oldest = time.time() - self.forget_s
        return {token: entry for token, entry in saved.items()
                if isinstance(entry, list) and len(entry) == 2 and entry[1] >= oldest}

    def _save(self) -> None:
        kept = dict(sorted(self.suspects.items(), key=lambda item: item[1][1])[-MAX_SUSPECTS:])
        temporary = self._journal().with_suffix(".tmp")
        temporary.write_text(json.dumps(kept))
        temporary.replace(self._journal())
        self.suspects = kept


def watch(path: str, pid: int, limit_s: float, period_s: float) -> int:
    """The watchdog process: SIGKILL ``pid`` when the turn in its slot has run past ``limit_s``;
    return once ``pid`` is gone."""
    with open(path, "r+b") as file:
        slot = mmap.mmap(file.fileno(), SLOT_BYTES)
    while True:
        time.sleep(period_s)
        if os.getppid() != pid:  # the host is gone: this process was given to init
            return 0
        started, length = _HEAD.unpack_from(slot, 0)
        if started and time.monotonic() - started > limit_s:
            turn = bytes(slot[_HEAD.size:_HEAD.size + min(length, _MAX_PAYLOAD)]).decode("utf-8", "replace")
            print(f"parlour watchdog: one turn of process {pid} ran past {limit_s:g} s, killing it "
                  f"(conversation and message: {turn.replace(chr(0), ' ')!r})", file=sys.stderr, flush=True)
            os.kill(pid, signal.SIGKILL)
            return 0


if __name__ == "__main__":
    sys.exit(watch(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
