"""Device protocols without I/O policy, and a simulator of every device they speak to.

    protocols/
    ├── errors.py          ProtocolError tree (FrameError, DeviceErrorResponse)
    ├── mtsics.py          MT-SICS (Mettler Toledo) line codec: commands, framing, responses
    ├── sartorius.py       Sartorius SBI (16- and 22-character forms)
    ├── toledo.py          Toledo Continuous output (checksum, status bits, stream framer)
    ├── crc.py             CRC-16/Modbus for RTU frames
    ├── modbus/            Modbus points, data types and word orders, read planning, write requests
    ├── cli.py             ``floorgate simulate <device or profile>``
    ├── tse/               fiscal TSE: log messages, receipt QR, TAR export, verification; software TSE (file I/O)
    └── sim/               simulators (the only place in this package that does I/O)
        ├── load.py            the load cycle of a vehicle / load on a scale
        ├── serve.py           TCP and pseudo-terminal serving of line devices
        ├── weighbridge.py     MT-SICS weighbridge
        ├── sartorius.py       Sartorius SBI scale
        ├── toledo.py          Toledo Continuous indicator (streams frames)
        ├── modbus_devices.py  SDM630 / SDM120 / T/H probe / silo cable models (and their register maps) on a real
        │                      pymodbus TCP server
        ├── weighing_terminals.py  Laumas TLU and Siemens SIWAREX WP models
        ├── modbus_rtu.py      RTU slaves on a serial line or over TCP, with fault injection
        └── ptylink.py         two pseudo-terminals joined by a line with real wire timing

Codecs are pure functions and small classes over bytes; they never open, read or sleep. Which registers a device
model has is data: a profile in ``firmware-config/profiles`` (read by the edge), and the simulator's own map.
"""
