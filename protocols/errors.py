"""Exceptions of the device protocols.

    ProtocolError               base of everything raised by ``protocols``
    ├── FrameError              bytes that are not a valid frame: garbage, non-ASCII, a weight that is not
    │                           a number, a line that is too long, a register block of the wrong size;
    │                           ``raw`` holds the offending bytes, ``reason`` says precisely what is wrong
    └── DeviceErrorResponse     a well-formed answer in which the device reports an error: MT-SICS
                                ``ES`` / ``ET`` / ``EL``, a Modbus exception response; ``code`` is the
                                device's code (``"ES"``, ``"modbus-exception-2"``), ``raw`` the frame

Both carry an optional ``device`` (the configured device id or a simulator name) so that a message names the
device and the frame involved; codecs do not know the device, so the caller adds it (``with_device``).
Invalid arguments from the calling program (not from a device) raise ``ValueError`` / ``TypeError``.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of all protocol errors."""


class FrameError(ProtocolError):
    """A frame that cannot be decoded.

    ``str()`` names the device (when known), the reason and the raw bytes, e.g.
    ``scale-1: weight field 'abc' is not a number; raw=b'S S        abc kg'``.
    """

    def __init__(self, raw: bytes, reason: str, *, device: str | None = None) -> None:
        self.raw = raw
        self.reason = reason
        self.device = device
        prefix = f"{device}: " if device else ""
        super().__init__(f"{prefix}{reason}; raw={raw!r}")

    def with_device(self, device: str) -> FrameError:
        """The same error naming ``device`` (raise it ``from`` the original)."""
        return FrameError(self.raw, self.reason, device=device)


class DeviceErrorResponse(ProtocolError):
    """The device understood the frame format but answered with an error code."""

    def __init__(self, message: str = "", *, code: str, raw: bytes, device: str | None = None) -> None:
        self.code = code
        self.raw = raw
        self.device = device
        self.message = message or f"device answered error {code}"
        prefix = f"{device}: " if device else ""
        super().__init__(f"{prefix}{self.message}; raw={raw!r}")

    def with_device(self, device: str) -> DeviceErrorResponse:
        """The same error naming ``device``."""
        return DeviceErrorResponse(self.message, code=self.code, raw=self.raw, device=device)


__all__ = ["DeviceErrorResponse", "FrameError", "ProtocolError"]
