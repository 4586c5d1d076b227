"""The linearizability checker on small histories whose answer is known."""

from __future__ import annotations

import math
import random

from .checker import Model, Op, Verdict, check
from .models import REGISTER


def put(c: int, key: str, value: str, call: float, ret: float, rev: int | None) -> Op:
    return Op(c, ("put", key, value), rev, call, ret)


def get(c: int, key: str, value: str | None, rev: int, call: float, ret: float) -> Op:
    return Op(c, ("get", key), (value, rev), call, ret)


def cas(
    c: int,
    key: str,
    expected: int,
    value: str,
    out: tuple[bool, int] | tuple[bool, str | None, int] | None,
    call: float,
    ret: float,
) -> Op:
    return Op(c, ("cas", key, expected, value), out, call, ret)


def verdict(history: list[Op]) -> Verdict:
    return check(REGISTER, history, budget=5).verdict


def test_sequential_history_is_linearizable() -> None:
    h = [
        get(1, "k", None, 0, 0, 1),
        put(1, "k", "a", 2, 3, 5),
        get(2, "k", "a", 5, 4, 6),
        cas(2, "k", 5, "b", (True, 7), 7, 8),
        get(1, "k", "b", 7, 9, 10),
    ]
    assert verdict(h) == Verdict.OK


def test_stale_read_after_a_completed_write_is_caught() -> None:
    h = [put(1, "k", "a", 0, 1, 2), put(1, "k", "b", 2, 3, 3), get(2, "k", "a", 2, 4, 5)]
    result = check(REGISTER, h)
    assert result.verdict == Verdict.ILLEGAL
    assert "get k -> ('a', 2)" in result.explain(REGISTER.describe)


def test_read_overlapping_a_write_may_see_either_value() -> None:
    write = put(1, "k", "a", 1, 5, 2)
    assert verdict([write, get(2, "k", None, 0, 2, 3)]) == Verdict.OK
    assert verdict([write, get(2, "k", "a", 2, 2, 3)]) == Verdict.OK


def test_reads_overlapping_a_write_must_agree_on_one_order() -> None:
    # Both reads overlap the write, but the second starts after the first ended: once one
    # read saw the new value, a later read must not see the old one.
    h = [
        put(1, "k", "a", 0, 10, 2),
        get(2, "k", "a", 2, 1, 2),
        get(3, "k", None, 0, 3, 4),
    ]
    assert verdict(h) == Verdict.ILLEGAL


def test_two_overlapping_writes_in_either_order() -> None:
    a, b = put(1, "k", "a", 0, 4, 2), put(2, "k", "b", 1, 5, 3)
    assert verdict([a, b, get(3, "k", "b", 3, 6, 7)]) == Verdict.OK
    # "a" got the lower revision, so it came first: reading "a" after both ended is stale.
    assert verdict([a, b, get(3, "k", "a", 2, 6, 7)]) == Verdict.ILLEGAL


def test_revisions_must_increase_with_the_order_of_writes() -> None:
    h = [put(1, "k", "a", 0, 1, 5), put(1, "k", "b", 2, 3, 4)]
    assert verdict(h) == Verdict.ILLEGAL


def test_unknown_write_may_take_effect_at_any_later_time() -> None:
    lost = put(1, "k", "a", 0, math.inf, None)
    # Not seen by an early read, seen by a later one, then not again after an overwrite.
    h = [
        lost,
        get(2, "k", None, 0, 1, 2),
        get(2, "k", "a", 9, 10, 11),
        put(3, "k", "b", 12, 13, 14),
        get(2, "k", "b", 14, 15, 16),
    ]
    assert verdict(h) == Verdict.OK


def test_unknown_write_may_never_take_effect() -> None:
    h = [put(1, "k", "a", 0, math.inf, None), get(2, "k", None, 0, 100, 101)]
    assert verdict(h) == Verdict.OK


def test_unknown_write_cannot_take_effect_before_it_was_invoked() -> None:
    h = [get(2, "k", "a", 3, 0, 1), put(1, "k", "a", 2, math.inf, None)]
    assert verdict(h) == Verdict.ILLEGAL


def test_unknown_write_cannot_come_back_after_being_overwritten_and_read() -> None:
    h = [
        put(1, "k", "a", 0, math.inf, None),
        get(2, "k", "a", 3, 1, 2),
        put(3, "k", "b", 4, 5, 6),
        get(2, "k", "b", 6, 7, 8),
        get(2, "k", "a", 3, 9, 10),
    ]
    assert verdict(h) == Verdict.ILLEGAL


def test_compare_and_set_succeeds_only_on_the_current_revision() -> None:
    base = [put(1, "k", "a", 0, 1, 3), put(1, "k", "b", 2, 3, 4)]
    assert verdict([*base, cas(2, "k", 4, "c", (True, 6), 4, 5)]) == Verdict.OK
    assert verdict([*base, cas(2, "k", 3, "c", (True, 6), 4, 5)]) == Verdict.ILLEGAL
    assert verdict([*base, cas(2, "k", 3, "c", (False, "b", 4), 4, 5)]) == Verdict.OK
    assert verdict([*base, cas(2, "k", 4, "c", (False, "b", 4), 4, 5)]) == Verdict.ILLEGAL
    # A failed compare-and-set reads the key: it must see the current value.
    assert verdict([*base, cas(2, "k", 3, "c", (False, "a", 3), 4, 5)]) == Verdict.ILLEGAL


def test_two_compare_and_sets_on_one_revision_cannot_both_succeed() -> None:
    h = [
        put(1, "k", "a", 0, 1, 3),
        cas(2, "k", 3, "b", (True, 5), 2, 6),
        cas(3, "k", 3, "c", (True, 6), 2, 6),
    ]
    assert verdict(h) == Verdict.ILLEGAL


def test_keys_are_independent() -> None:
    h = [put(1, "x", "a", 0, 1, 2), get(2, "y", None, 0, 2, 3), get(2, "x", "a", 2, 2, 3)]
    assert verdict(h) == Verdict.OK
    assert verdict([*h, get(3, "y", "a", 2, 4, 5)]) == Verdict.ILLEGAL


def test_a_budget_too_small_says_unknown_never_ok() -> None:
    # Many concurrent unknown writes and reads that fit no order: a large search space.
    rng = random.Random(7)
    h = [put(i, "k", f"v{i}", rng.random(), math.inf, None) for i in range(40)]
    h += [get(100 + i, "k", None, 0, 1 + rng.random(), 3) for i in range(40)]
    h.append(get(200, "k", "nothing-wrote-this", 99, 5, 6))
    result = check(REGISTER, h, budget=0.05)
    assert result.verdict in (Verdict.UNKNOWN, Verdict.ILLEGAL)


def test_random_sequential_histories_of_a_real_register_are_linearizable() -> None:
    """Run a real register with random overlapping clients; the checker must say OK."""
    for seed in range(30):
        rng = random.Random(seed)
        value: str | None = None
        rev = 0
        global_rev = 1
        # A client learns a revision only from a response; after an unknown write nobody
        # can compare against its revision until somebody read it.
        known = True
        ops: list[Op] = []
        t = 0.0
        for i in range(60):
            t += rng.random()
            call = t - rng.random() * 2  # invoked up to 2 s before taking effect
            ret = t + rng.random() * 2
            kind = rng.choice(["get", "put", "cas", "put?"])
            if kind == "get":
                ops.append(get(i, "k", value, rev, call, ret))
                known = True
            elif kind == "cas":
                expected = rev if known and rng.random() < 0.5 else rev + 1
                if expected == rev:
                    global_rev += 1
                    value, rev = f"c{i}", global_rev
                    ops.append(cas(i, "k", expected, value, (True, rev), call, ret))
                    known = True
                else:
                    out = (False, value, rev)
                    ops.append(cas(i, "k", expected, f"c{i}", out, call, ret))
                    known = True
            else:
                global_rev += 1
                value, rev = f"p{i}", global_rev
                unknown = kind == "put?"
                known = not unknown
                ops.append(
                    put(i, "k", value, call, math.inf if unknown else ret, None if unknown else rev)
                )
        assert verdict(ops) == Verdict.OK, seed


def test_a_custom_model_with_one_partition() -> None:
    # A counter: "inc" returns the new count. Two overlapping increments both returning 1 is
    # the textbook lost update.
    def step(state: int, inp: str, out: int | None) -> tuple[bool, int]:
        return (out is None or out == state + 1), state + 1

    counter: Model[int] = Model(init=0, step=step)
    ok = [Op(1, "inc", 1, 0, 2), Op(2, "inc", 2, 1, 3)]
    lost = [Op(1, "inc", 1, 0, 2), Op(2, "inc", 1, 1, 3)]
    assert check(counter, ok).verdict == Verdict.OK
    assert check(counter, lost).verdict == Verdict.ILLEGAL
