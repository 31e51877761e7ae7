"""The MT-SICS weighbridge simulator on a pseudo-terminal, served by an event loop in a thread of its own, with a
clock the test sets (``at(visit, phase)``): for tests that run the agent as a process and move trucks on and off.

    sim = BridgeThread([24560, 11000])
    pty = sim.start()            # the agent's device address: f"serial://{pty}"
    sim.at(0, Phase.LOADED)
    ...
    sim.stop()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from decimal import Decimal

from protocols.sim.load import Phase
from protocols.sim.weighbridge import DEFAULT_SERIAL, PtyServer, Weighbridge


class BridgeThread:
    """The weighbridge on a pseudo-terminal, served by an event loop in a thread; ``t`` is its clock."""

    def __init__(self, weights: Sequence[int | Decimal], *, serial: str = DEFAULT_SERIAL,
                 mixed_decimals: bool = False) -> None:
        self.t = 0.0
        self.bridge = Weighbridge(trucks=weights, seed=1, serial=serial, clock=lambda: self.t,  # one weight a visit
                                  mixed_decimals=mixed_decimals)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"sim-weighbridge-{serial}", daemon=True)
        self.server = PtyServer(self.bridge)

    def start(self) -> str:
        self._thread.start()
        pty: str = asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return pty

    def at(self, visit: int, phase: Phase) -> None:
        self.t = self.bridge.time_of(visit, phase)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
