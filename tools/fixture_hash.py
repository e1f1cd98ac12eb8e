"""The counter-based hash the fixture scripts make weights and inputs from, so that the Rust
tests (tests/all/common.rs `uniform`) make the very same values instead of storing them."""
import numpy as np


def uniform(seed, n):
    """u in [-1, 1): murmur-style finaliser of (index, seed), top 24 bits."""
    i = np.arange(n, dtype=np.uint64)
    m = np.uint64(0xFFFFFFFF)
    x = ((i * np.uint64(0x9E3779B1)) & m) ^ ((np.uint64(seed) * np.uint64(0x85EBCA77)) & m)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & m
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & m
    x ^= x >> np.uint64(16)
    u = (x >> np.uint64(8)).astype(np.float32) / np.float32(16777216.0)
    return u * np.float32(2.0) - np.float32(1.0)
