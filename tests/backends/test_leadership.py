"""Leader leases: one holder per name for a TTL of the store's clock, renewed only by it,
given up at once on resign, taken over by another once it ran out.

Expiry tests use a deliberately short TTL and wait on the condition (another candidate
winning), never a fixed sleep.
"""

from __future__ import annotations

import threading
import time

from conveyor.backends import open_backend
from engine.helpers import wait_until

NAME = "maintenance"
LONG = 30.0
"""A TTL that does not run out during a test."""
SHORT = 0.3
"""A TTL a test waits out."""


def test_the_first_candidate_leads_and_others_do_not_while_its_lease_lives(backend):
    assert backend.leader_get(NAME) is None

    assert backend.leader_elect(NAME, "a", LONG) is True
    assert backend.leader_elect(NAME, "b", LONG) is False

    assert backend.leader_get(NAME) == "a"


def test_the_holder_renews_its_lease(backend):
    assert backend.leader_elect(NAME, "a", LONG) is True
    assert backend.leader_elect(NAME, "a", LONG) is True
    assert backend.leader_elect(NAME, "b", LONG) is False
    assert backend.leader_get(NAME) == "a"


def test_another_candidate_takes_over_once_the_lease_ran_out(backend):
    assert backend.leader_elect(NAME, "a", LONG) is True
    assert backend.leader_elect(NAME, "b", SHORT) is False
    renewed = time.monotonic()
    assert backend.leader_elect(NAME, "a", SHORT) is True  # renewal sets the new, short TTL

    wait_until(lambda: backend.leader_elect(NAME, "b", LONG), timeout=5, what="b takes over")
    took_over = time.monotonic()

    assert took_over - renewed >= SHORT - 0.02, "b led while a's renewed lease still lived"
    assert backend.leader_get(NAME) == "b"
    assert backend.leader_elect(NAME, "a", LONG) is False


def test_an_expired_lease_has_no_holder(backend):
    assert backend.leader_elect(NAME, "a", SHORT) is True
    wait_until(lambda: backend.leader_get(NAME) is None, timeout=5, what="the lease runs out")


def test_a_holder_whose_lease_ran_out_can_take_it_again(backend):
    assert backend.leader_elect(NAME, "a", SHORT) is True
    wait_until(lambda: backend.leader_get(NAME) is None, timeout=5, what="the lease runs out")
    assert backend.leader_elect(NAME, "a", LONG) is True
    assert backend.leader_get(NAME) == "a"


def test_resign_by_another_candidate_is_a_no_op(backend):
    assert backend.leader_elect(NAME, "a", LONG) is True

    backend.leader_resign(NAME, "b")

    assert backend.leader_get(NAME) == "a"
    assert backend.leader_elect(NAME, "b", LONG) is False


def test_resign_by_the_holder_frees_the_lease_at_once(backend):
    assert backend.leader_elect(NAME, "a", LONG) is True

    backend.leader_resign(NAME, "a")

    assert backend.leader_get(NAME) is None
    assert backend.leader_elect(NAME, "b", LONG) is True
    assert backend.leader_get(NAME) == "b"


def test_resign_of_a_lease_nobody_holds_is_a_no_op(backend):
    backend.leader_resign(NAME, "a")
    assert backend.leader_get(NAME) is None
    assert backend.leader_elect(NAME, "a", LONG) is True


def test_two_names_are_independent(backend):
    assert backend.leader_elect("maintenance", "a", LONG) is True
    assert backend.leader_elect("cron", "b", LONG) is True
    assert backend.leader_elect("cron", "a", LONG) is False

    backend.leader_resign("maintenance", "a")

    assert backend.leader_get("maintenance") is None
    assert backend.leader_get("cron") == "b"
    assert backend.leader_elect("maintenance", "b", LONG) is True
    assert backend.leader_get("cron") == "b"


def test_a_second_store_instance_sees_the_same_leader(backend, store_url):
    other = open_backend(store_url)
    other.open()
    try:
        assert backend.leader_elect(NAME, "a", LONG) is True
        assert other.leader_get(NAME) == "a"
        assert other.leader_elect(NAME, "b", LONG) is False
        backend.leader_resign(NAME, "a")
        assert other.leader_elect(NAME, "b", LONG) is True
        assert backend.leader_get(NAME) == "b"
    finally:
        other.close()


def test_candidates_racing_for_a_free_lease_elect_exactly_one(backend, store_url):
    other = open_backend(store_url)
    other.open()
    try:
        stores = [backend, other] * 4
        won: list[str] = []
        errors: list[BaseException] = []
        start = threading.Barrier(len(stores))

        def run(n: int) -> None:
            try:
                start.wait()
                if stores[n].leader_elect(NAME, f"c{n}", LONG):
                    won.append(f"c{n}")
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        assert len(won) == 1, f"several leaders at once: {won}"
        assert backend.leader_get(NAME) == won[0]
    finally:
        other.close()
