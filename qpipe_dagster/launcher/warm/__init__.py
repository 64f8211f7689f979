"""Local runs forked from a warm worker: `server` (the process that holds the code location and
the model and forks run workers), `client` (find or start it, ask for a fork) and `launcher`
(the RunLauncher the GPU router uses for local runs when `warm_workers` is configured).
"""
