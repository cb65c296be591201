"""Runnable examples of ccflow (``uvicorn examples.calc_api.app:app`` from the repository root)."""
