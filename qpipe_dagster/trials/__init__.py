"""Trial knowledge base: overfitting statistics, the trial store and robust recommendations.

Free of Dagster: `defs/` wraps it in assets and `cli/trials.py` in commands.
"""
