"""Device protocols without I/O policy, and a simulator of every device they speak to.

    protocols/
    ├── errors.py          ProtocolError tree (FrameError, DeviceErrorResponse)
    ├── mtsics.py          MT-SICS (Mettler Toledo) line codec: commands, framing, responses
    ├── crc.py             CRC-16/Modbus for RTU frames
    ├── modbus_maps.py     register maps (Eastron SDM630, T/H probe), read planning, decoding
    ├── cli.py             ``floorgate simulate <device>``
    └── sim/               simulators (the only place in this package that does I/O)
        ├── weighbridge.py     MT-SICS weighbridge: state machine, TCP server, pseudo-terminal server
        └── modbus_devices.py  SDM630 / T/H probe models on a real pymodbus TCP server

Codecs are pure functions and small classes over bytes; they never open, read or sleep.
"""
