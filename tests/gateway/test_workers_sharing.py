"""What workers share (gateway/sharing.py), in process: gateways on one fake clock, each one's
changes handed to the others as the datagrams would carry them; the supervisor's pure parts
(gateway/workers.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from modelyard.gateway.breaker import Permit, State
from modelyard.gateway.errors import GatewayError, Outcome
from modelyard.gateway.server import endpoints_for
from modelyard.gateway.sharing import BackendChange, BackendSharing, SharedState
from modelyard.gateway.state import BackendState, Gateway
from modelyard.gateway.upstream import Attempt
from modelyard.gateway.workers import cores_available, hold_port, restart_pause_s
from modelyard.http.fake import FakeTransport, Reply, Request
from tests.gateway.fakes import FakeClock, fleet_text, load_test_fleet


async def _never(request: Request) -> Reply:
    raise AssertionError("no request goes upstream in these tests")


def _workers(
    tmp_path: Path, count: int, clock: FakeClock
) -> tuple[list[Gateway], list[BackendChange]]:
    """`count` gateways on one fleet and clock, each one's changes delivered to the others
    at once; and the list of changes sent."""
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_text())
    loaded = load_test_fleet(path)
    gateways = [
        Gateway.build(loaded, endpoints_for(loaded, None), FakeTransport(_never), clock)
        for _ in range(count)
    ]
    sharings = [BackendSharing(g) for g in gateways]
    sent: list[BackendChange] = []
    for index, (gateway, sharing) in enumerate(zip(gateways, sharings, strict=True)):

        def tell(
            backend: BackendState, index: int = index, sharing: BackendSharing = sharing
        ) -> None:
            change = sharing.changed(backend)
            if change is None:
                return
            sent.append(change)
            for other, peer in enumerate(sharings):
                if other != index:
                    peer.receive(BackendChange.decode(change.encode()))  # as on the wire

        gateway.on_backend_change = tell
    return gateways, sent


def _primary(gateway: Gateway) -> BackendState:
    return gateway.backends["primary"][0]


def _fail(gateway: Gateway, outcome: Outcome = Outcome.SERVER_ERROR) -> None:
    gateway.record(_primary(gateway), Attempt("primary", outcome, status=500, detail="boom"))


def test_a_trip_in_one_worker_opens_every_worker_until_the_same_moment(tmp_path: Path) -> None:
    clock = FakeClock()
    (a, b, c), sent = _workers(tmp_path, 3, clock)
    _fail(b)  # consecutive_failures is 2: one failure in b and one in a trip nobody
    _fail(a)
    assert all(_primary(g).breaker.current(clock.now()) is State.CLOSED for g in (a, b, c))
    assert sent == []  # counts toward a trip stay in their worker
    _fail(a)
    opened_at = _primary(a).breaker.opened_at
    for gateway in (a, b, c):
        assert _primary(gateway).breaker.current(clock.now()) is State.OPEN
        assert _primary(gateway).breaker.opened_at == opened_at
        assert "server_error" in _primary(gateway).last_error
    assert len(sent) == 1  # adopting it sends nothing back
    clock.advance(1.0)  # open_for: 1 s, in every worker at once
    assert all(_primary(g).breaker.current(clock.now()) is State.HALF_OPEN for g in (a, b, c))
    assert len(sent) == 1  # half-open follows from the time: nothing to tell


def _probing(tmp_path: Path, after_s: float) -> tuple[FakeClock, Gateway, Gateway, Permit]:
    """Two workers: `a` trips the primary's breaker, `b` takes a half-open probe `after_s`
    later."""
    clock = FakeClock()
    (a, b), _ = _workers(tmp_path, 2, clock)
    _fail(a)
    _fail(a)
    clock.advance(after_s)
    permit = _primary(b).breaker.allow(clock.now())
    assert permit is not None and permit.probe_of > 0
    return clock, a, b, permit


def test_a_probe_that_succeeds_closes_every_worker(tmp_path: Path) -> None:
    clock, a, b, permit = _probing(tmp_path, 1.0)
    b.record(_primary(b), Attempt("primary"), permit)
    assert _primary(a).breaker.current(clock.now()) is State.CLOSED
    assert _primary(b).breaker.current(clock.now()) is State.CLOSED


def test_a_probe_that_fails_reopens_every_worker_from_its_moment(tmp_path: Path) -> None:
    clock, a, b, permit = _probing(tmp_path, 1.5)
    b.record(_primary(b), Attempt("primary", Outcome.SERVER_ERROR, status=500), permit)
    assert _primary(a).breaker.state is State.OPEN
    assert _primary(a).breaker.opened_at == _primary(b).breaker.opened_at == clock.now()


def test_back_off_and_health_are_shared(tmp_path: Path) -> None:
    clock = FakeClock()
    (a, b), _ = _workers(tmp_path, 2, clock)
    a.record(_primary(a), Attempt("primary", Outcome.RATE_LIMITED, status=429, retry_after_s=7))
    assert _primary(b).backoff_until == clock.now() + 7
    assert _primary(b).breaker.failures == 0  # a 429 counts toward no breaker, here or there
    _primary(b).healthy = False  # as gateway/health.py's check records a failed check
    b.update_gauge(_primary(b))
    assert _primary(a).healthy is False


def test_of_each_part_the_latest_change_wins(tmp_path: Path) -> None:
    clock = FakeClock()
    (a,), _ = _workers(tmp_path, 1, clock)
    sharing = BackendSharing(a)
    now = clock.now()
    url = "http://primary:8000"
    opened = SharedState(open=True, opened_at=now, breaker_at=now, healthy=True, healthy_at=now)
    sharing.receive(BackendChange("primary", url, opened, "boom"))
    assert _primary(a).breaker.state is State.OPEN and _primary(a).last_error == "boom"
    # a worker that never heard of the trip reports a later health check: its breaker part
    # (never changed) does not close this one
    fresh = SharedState(healthy=False, healthy_at=now + 1)
    sharing.receive(BackendChange("primary", url, fresh, ""))
    assert _primary(a).breaker.state is State.OPEN and _primary(a).healthy is False
    earlier = SharedState(breaker_at=now - 1)  # closed, before the trip: ignored
    sharing.receive(BackendChange("primary", url, earlier, ""))
    assert _primary(a).breaker.state is State.OPEN
    sharing.receive(BackendChange("primary", url, SharedState(breaker_at=now + 2), ""))
    assert _primary(a).breaker.state is State.CLOSED
    # a backend this worker no longer routes to (reloaded away) is ignored
    sharing.receive(BackendChange("primary", "http://gone:1", opened, ""))
    assert [b.url for b in a.backends["primary"]] == [url]


def test_a_worker_that_joins_learns_what_the_others_know(tmp_path: Path) -> None:
    clock = FakeClock()
    (a,), _ = _workers(tmp_path, 1, clock)
    told = BackendSharing(a)
    a.on_backend_change = told.changed  # what `a` would tell: remembered in `told`
    _fail(a)
    _fail(a)
    (late,), _ = _workers(tmp_path, 1, clock)  # started after the trip
    joined = BackendSharing(late)
    for change in told.everything():  # its answer to the newcomer's hello
        joined.receive(BackendChange.decode(change.encode()))
    assert _primary(late).breaker.state is State.OPEN
    assert _primary(late).breaker.opened_at == _primary(a).breaker.opened_at


def test_a_change_survives_the_wire_and_garbage_does_not() -> None:
    state = SharedState(True, 12.5, 12.5, 3.0, 11.0, None, 0.0)
    change = BackendChange("m", "http://h:1", state, "why")
    assert BackendChange.decode(change.encode()) == change
    for garbage in (b"", b"{}", b"[1, 2]", b"\xff"):
        with pytest.raises(ValueError, match="not a backend change"):
            BackendChange.decode(garbage)


def test_restart_pause_grows_while_workers_die_young() -> None:
    pauses = [restart_pause_s(deaths) for deaths in range(9)]
    assert pauses == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_cores_available_reads_the_cgroup_quota(tmp_path: Path) -> None:
    import os

    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cores_available(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core: one worker
    assert cores_available(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("6400000 100000\n")  # 64 cores: no more than we have
    assert cores_available(tmp_path) == affinity
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")  # cgroup v1: 1.5 cores
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cores_available(tmp_path) == min(2, affinity)
    assert cores_available(tmp_path / "none") == affinity


def test_a_taken_port_is_one_line() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(GatewayError, match=f"cannot listen on 127.0.0.1:{port}: "):
            hold_port("127.0.0.1", port)
    finally:
        taken.close()
    held = hold_port("127.0.0.1", 0)  # the OS picks; a worker binds it too (SO_REUSEPORT)
    worker = socket.socket()
    worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        worker.bind(held.getsockname())
    finally:
        worker.close()
        held.close()
