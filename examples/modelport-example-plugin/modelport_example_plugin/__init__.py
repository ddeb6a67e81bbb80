"""Example modelport provider plugins (see echo.py and legacy.py)."""
