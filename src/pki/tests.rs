//! Unit tests: small chains built in memory.
