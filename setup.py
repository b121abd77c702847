"""The one part of superv that is built: the hot path's native lane (agent_worker/_hot_lane.c).

Optional: without a C compiler and Python's headers the install goes on without it, and
the worker's hot path runs its Python loop (agent_worker/hot_path.py), slower per key.
Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("agent_worker._hot_lane", ["agent_worker/_hot_lane.c"],
                             extra_compile_args=["-O2", "-Wall"], optional=True)])
