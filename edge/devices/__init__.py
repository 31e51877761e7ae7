"""Device drivers: what one device on a bus does in a poll or a command (the bus scheduler calls them).

    registry.py       plan_buses / build_buses: every device is a profile on a bus; its driver is found by the
                      profile's protocol (DRIVERS); a device given by ``type`` is a shipped profile
    profiles.py       reading and validating profiles (firmware-config/profiles/*.yaml, JSON Schema + rules)
    profile_model.py  what a validated profile says (Profile, ProfilePoint, …)
    modbus.py         ModbusDriver: register-mapped devices, readings on change, status-bit events, writes
    terminal.py       WeighingTerminalDriver: Modbus weighing terminals (Laumas TLU, SIWAREX WP) taking weighings
    scale.py          MtSicsDriver: MT-SICS scales; sartorius.py (SBI) and toledo.py (Toledo Continuous) build on it
    weighing.py       the weighing detector and the ``weighing`` business record every scale driver emits

Drivers emit their records into a ``edge.bus.sink.RecordSink`` (``emit(stream, records)``), never into the agent.
"""
