"""The way out and back: the MQTT session that sends the outbox's batches to central and takes central's signed
acks, replay requests and device commands.
"""
