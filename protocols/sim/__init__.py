"""Simulators of the devices ``protocols`` speaks to; the only part of ``protocols`` that does I/O.

    load.py                 the load on a scale over time (one truck / sack / batch per cycle), shared by all scales
    serve.py                a byte-stream device over TCP and on a pseudo-terminal (``DevicePty``, ``serve_device_tcp``)
    weighbridge.py          MT-SICS weighbridge: pure state machine (``Weighbridge``, injectable clock),
                            line server over TCP (``serve_tcp``) and over a pseudo-terminal (``PtyServer``)
    sartorius.py            Sartorius SBI scale (16 / 22 characters), over TCP and a pseudo-terminal
    toledo.py               Toledo Continuous indicator streaming frames at the line's pace, over TCP and a pty
    modbus_devices.py       Modbus models (Eastron SDM630 / SDM120, T/H probe, silo cable, and the weighing
                            terminals of weighing_terminals.py: Laumas TLU, SIWAREX WP) on a real pymodbus TCP server
    modbus_rtu.py           the same models as RTU slaves on one serial line (or RTU over TCP), with fault injection
    ptylink.py              two pseudo-terminals joined by a serial line with real wire time (``PtyLink``)

They reproduce the frames of the device reference (devices.md §1-§3) exactly, errors and overload included, so
that the edge agent and the tests talk to something real: real TCP sockets and real pseudo-terminals.
"""
