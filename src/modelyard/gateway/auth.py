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


@dataclass
class RateLimiter:
    rate: float
    burst: int
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def allow(self, who: str, now: float) -> tuple[bool, float]:
        bucket = self.buckets.get(who)
        if bucket is None:
            bucket = self.buckets[who] = TokenBucket(self.rate, self.burst)
        allowed = bucket.take(now)
        return allowed, 0.0 if allowed else bucket.retry_after()
