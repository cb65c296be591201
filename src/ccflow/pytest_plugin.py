"""The ccflow pytest plugin (entry point ``pytest11``): fixtures on the local authority."""

from __future__ import annotations
