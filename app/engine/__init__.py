"""The serving engine: request state (request.py), scheduling policy (scheduler.py), tensor execution
(executor.py, backends.py), served models (registry.py) and the solve path (service.py)."""
