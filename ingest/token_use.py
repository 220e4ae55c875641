"""When a door notes that a token was used: the first use a process sees, then at most one per
``every`` seconds per token, so `highland tokens list` can show "last used" without every request
becoming a write to ClickHouse. The notes themselves are written by sinks/tokens.py
(``Verifier.record_use``); this only decides which uses are worth one.

Bounded like the gateway's token cache: at most ``size`` tokens are remembered (least recently used
out); a forgotten token's next use is noted again, which costs one row, never a wrong answer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class UseRecorder(Protocol):
    """(token SHA-256, agency) -> None: note that the token was used now. Blocking."""

    def __call__(self, sha256: str, agency: str) -> None: ...


class UseThrottle:
    def __init__(self, every: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.size, self._clock = every, size, clock
        self._noted: OrderedDict[str, float] = OrderedDict()

    def due(self, key: str) -> bool:
        """True when this use of the token ``key`` should be noted (and counts it as noted)."""
        now = self._clock()
        last = self._noted.get(key)
        if last is not None and now - last < self.every:
            self._noted.move_to_end(key)
            return False
        self._noted[key] = now
        self._noted.move_to_end(key)
        while len(self._noted) > self.size:
            self._noted.popitem(last=False)
        return True
