"""Which uses of a token a door notes for "last used": the first, then at most one per period per
token, with a bounded memory (a forgotten token is noted again, never wrongly skipped)."""

from __future__ import annotations

from highland.ingest.token_use import UseThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_noted_once_per_period_whatever_the_number_of_requests():
    clock = Clock()
    uses = UseThrottle(every=60, size=100, clock=clock)
    noted = []
    for second in range(0, 300):  # ten requests a second for five minutes
        clock.now = float(second)
        noted += [second for _ in range(10) if uses.due("token-a")]
    assert noted == [0, 60, 120, 180, 240]


def test_tokens_are_throttled_each_on_its_own():
    clock = Clock()
    uses = UseThrottle(every=60, size=100, clock=clock)
    assert uses.due("a") and uses.due("b")
    assert not uses.due("a") and not uses.due("b")


def test_memory_is_bounded_and_a_forgotten_token_is_noted_again():
    clock = Clock()
    uses = UseThrottle(every=60, size=3, clock=clock)
    for key in ("a", "b", "c", "d"):  # d pushes a, the least recently used, out
        assert uses.due(key)
    assert not uses.due("d") and not uses.due("b")
    assert uses.due("a")  # forgotten: noted again (one more row, never a missed use)
