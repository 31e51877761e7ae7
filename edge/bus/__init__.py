"""One scheduler per physical bus: an RS-485 line, a serial port, or one TCP endpoint (gateway or device).

    scheduler.py   BusScheduler: the queue of polls and commands of one bus, one exchange at a time
    health.py      DeviceHealth: the truth about a device — round-trip time, errors by kind, online/offline
    sink.py        RecordSink: what drivers and their health emit into; OutboxSink: the node's, over the outbox
    connection.py  BusConnection: what a scheduler opens, closes and reopens (Modbus client, line transport)
"""
