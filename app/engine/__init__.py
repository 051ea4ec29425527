"""The engine core and its boundary: the protocol (protocol.py: plain messages), the scheduling policy
(scheduler.py, pure), the model runner (runner.py: device buffers, CUDA graphs) over the step backends
(backends.py), the core and its loop (core.py, core_loop.py), and the API side's client (client.py)."""
