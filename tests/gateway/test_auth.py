from __future__ import annotations

from modelyard.gateway.auth import KeyCheck, RateLimiter, TokenBucket, hash_key


def test_keys_are_matched_by_hash() -> None:
    check = KeyCheck((hash_key("sk-one"), hash_key("sk-two")))
    assert check.identify("Bearer sk-two") == hash_key("sk-two")
    assert check.identify("Bearer sk-three") is None
    assert check.identify("sk-one") is None and check.identify(None) is None
    assert not KeyCheck(()).enabled


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == 0.5
    assert bucket.take(0.5) and not bucket.take(0.5)


def test_the_limiter_keeps_at_most_max_callers_buckets() -> None:
    """One bucket per client address when keys are off: a scan from many addresses must not
    grow the gateway's memory without bound."""
    limiter = RateLimiter(rate=1.0, burst=2, max_callers=100)
    for caller in range(10_000):
        limiter.allow(f"10.0.{caller // 256}.{caller % 256}", now=caller * 0.001)
    assert len(limiter.buckets) <= 100


def test_forgetting_drops_refilled_buckets_and_spares_a_caller_being_limited() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, max_callers=10)
    for caller in range(9):
        limiter.allow(f"light-{caller}", 0.0)  # then idle: full again after 2 s
    assert [limiter.allow("heavy", 4.9)[0] for _ in range(3)] == [True, True, False]
    assert len(limiter.buckets) == 10
    assert limiter.allow("newcomer", 5.0)[0]  # at the limit: the refilled buckets go
    assert set(limiter.buckets) == {"heavy", "newcomer"}
    allowed, wait = limiter.allow("heavy", 5.0)
    assert not allowed and wait > 0.8  # still limited: its bucket was kept
