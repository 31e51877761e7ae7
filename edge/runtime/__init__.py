"""Plumbing of the agent process: asyncio helpers, systemd notification, the local /health and /metrics server.
"""
