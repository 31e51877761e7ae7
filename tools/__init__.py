"""Tools, not runtime: the demo, the benchmarks, the Modbus probe, the profile validator, the throwaway servers of
tests and benchmarks, and the dashboard checker. ``edge`` and ``central`` never import this package; tools may
import everything (like ``floorgate_cli``, the composition root).
"""
