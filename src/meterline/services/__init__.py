"""Application services: one use case each, composing the domain and the store.

The CLI and the HTTP API call these; neither holds business logic of its own.
"""
