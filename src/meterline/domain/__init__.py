"""The pure domain core: no I/O, no wall clock, no float.

Everything here is deterministic: the same inputs give the same outputs on any
machine and any storage backend. Adapters (store, CLI, HTTP) live outside.
"""
