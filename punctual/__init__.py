"""Punctual's Python client: `from punctual.client import Client`. Imports nothing of the server's code."""
