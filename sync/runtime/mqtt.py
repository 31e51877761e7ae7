"""What the edge agent and central add to aiomqtt's client.

**A connection the broker closes before its CONNACK fails the connect at once.** aiomqtt resolves a connect only on a
CONNACK: when the broker accepts the TCP connection and then drops it — a broker restarting, stopping, or refusing
the TLS session late — paho reports the disconnect, but aiomqtt ignores it because it was not connected yet, and
the connect waits for its whole ``timeout`` (10 s) instead. A node reconnecting to a restarting broker lost those
seconds each time, and an agent told to stop in that moment took them to stop.

**A lost connection is not reported again at exit.** aiomqtt records an unexpected disconnect as an exception on a
future that only its message iterator awaits; a client that was publishing when the broker went away left Python's
"Future exception was never retrieved" in the log. The loss itself is reported where it happens (the uplink and
the ingest log it)."""

from __future__ import annotations

from typing import Any

import aiomqtt


def fail_connect_on_close(client: aiomqtt.Client) -> aiomqtt.Client:
    """Makes a disconnect before the CONNACK fail ``client``'s pending connect with ``MqttError`` naming the cause,
    instead of waiting for the connect timeout. Returns the client."""
    paho = client._client  # aiomqtt has no public hook for this
    theirs: Any = paho.on_disconnect
    loop = client._loop

    def on_disconnect(c: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
        pending = client._connected  # the connect waiting for its CONNACK, taken now
        if not pending.done():
            error = aiomqtt.MqttError("the broker closed the connection before accepting it (no CONNACK)")

            def fail() -> None:
                if not pending.done():
                    pending.set_exception(error)
                    pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved"

            loop.call_soon_threadsafe(fail)
        if theirs is not None:
            theirs(c, userdata, flags, reason_code, properties)
        lost = client._disconnected
        if lost.done() and not lost.cancelled():
            lost.exception()  # seen here: no "Future exception was never retrieved" when nobody awaited the loss

    paho.on_disconnect = on_disconnect
    return client


def abandon_connect(client: aiomqtt.Client) -> bool:
    """Give up ``client``'s connect if it is waiting for the broker's CONNACK: fail it now and close the
    connection (a DISCONNECT, then the socket). For a client being stopped while the network is cut mid-connect —
    the TCP connection up, the CONNECT sent, no answer ever — which would otherwise wait for its whole timeout.
    Returns False, doing nothing, while the connect is still in aiomqtt's worker thread (TCP and TLS handshakes;
    a thread cannot be stopped) or when it has already ended."""
    paho = client._client
    pending = client._connected
    # the socket is open and its reader registered (aiomqtt starts its misc task right after, in the same order on
    # this loop), so closing it now cannot race with the worker thread's registration of a closed descriptor
    if pending.done() or paho.socket() is None or client._misc_task is None:
        return False
    pending.set_exception(aiomqtt.MqttError("connect abandoned: the client is being stopped"))
    pending.add_done_callback(lambda f: f.cancelled() or f.exception())
    paho.disconnect()  # queues DISCONNECT; paho closes the socket once it is written, or at once without one
    return True
