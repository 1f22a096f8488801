"""API keys (hashed, compared in constant time, never logged) and per-key rate limits."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field


def hash_key(key: str) -> str:
    """The SHA-256 hex digest a fleet file stores instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyCheck:
    hashes: tuple[str, ...]

    @property
    def enabled(self) -> bool:
        return bool(self.hashes)

    def identify(self, authorization: str | None) -> str | None:
        """The matching hash for an `Authorization: Bearer KEY` header, or None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        digest = hash_key(authorization[len("Bearer ") :].strip())
        found = None
        for known in self.hashes:  # compare with every hash, each in constant time
            if hmac.compare_digest(digest, known):
                found = known
        return found


@dataclass
class TokenBucket:
    """`rate` tokens per second up to `burst`; pure, the caller passes the time."""

    rate: float
    burst: int
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.updated = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def retry_after(self) -> float:
        return max((1.0 - self.tokens) / self.rate, 0.0)


MAX_CALLERS = 10_000


@dataclass
class RateLimiter:
    """A token bucket per caller (API key, or client address when keys are off), at most
    `max_callers` of them: past that, buckets that have refilled (the same as a new one) are
    dropped, then the longest idle — which can only let a forgotten caller burst once more."""

    rate: float
    burst: int
    max_callers: int = MAX_CALLERS
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def allow(self, who: str, now: float) -> tuple[bool, float]:
        bucket = self.buckets.get(who)
        if bucket is None:
            if len(self.buckets) >= self.max_callers:
                self._forget(now)
            bucket = self.buckets[who] = TokenBucket(self.rate, self.burst)
        allowed = bucket.take(now)
        return allowed, 0.0 if allowed else bucket.retry_after()

    def _forget(self, now: float) -> None:
        """Down to half the limit: full buckets first, then the longest idle."""
        keep = self.max_callers // 2
        full_after = self.burst / self.rate  # idle this long, a bucket is full again
        refilled = [who for who, b in self.buckets.items() if now - b.updated >= full_after]
        for who in refilled:
            del self.buckets[who]
        if len(self.buckets) > keep:
            by_idle = sorted(self.buckets, key=lambda who: self.buckets[who].updated)
            for who in by_idle[: len(self.buckets) - keep]:
                del self.buckets[who]
