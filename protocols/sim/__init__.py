"""Simulators of the devices ``protocols`` speaks to; the only part of ``protocols`` that does I/O.

    weighbridge.py      MT-SICS weighbridge: pure state machine (``Weighbridge``, injectable clock),
                        line server over TCP (``serve_tcp``) and over a pseudo-terminal (``PtyServer``)
    modbus_devices.py   Eastron SDM630 and a temperature/humidity probe on a real pymodbus TCP server

They reproduce the frames of the device reference (devices.md §1 and §3) exactly, errors and overload included, so
that the edge agent and the tests talk to something real: real TCP sockets and real pseudo-terminals.
"""
