"""Shared by the TSE tests: the two real receipt QR codes, a fake clock, and ``floorgate`` as a child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: a verbatim copy of ../shared/reference/tse-qr-vectors.txt kept in the repository (a checkout may stand anywhere)
VECTORS = ROOT / "tests" / "data" / "tse-qr-vectors.txt"
#: the reference itself, where the checkout stands beside shared/ (a developer's machine)
SHARED_VECTORS = ROOT.parent / "shared" / "reference" / "tse-qr-vectors.txt"

# the two real receipts of ../shared/reference/tse-qr-vectors.txt
P256_QR = (
    "V0;ERS 8cb8e2de-4052-481b-945b-118022951944;Kassenbeleg-V1;Beleg^21.42_0.00_0.00_0.00_0.00^21.42:Unbar;1;31;"
    "2021-08-23T14:36:27.000Z;2021-08-23T14:36:33.000Z;ecdsa-plain-SHA256;unixTime;"
    "TGnWiq3ZW7gi4Vs+DxLGsJZj9v271dHmhQAcb057F3oWkdKJ61UW2LLVTZQhW673yLa53Mm6oPeMU1Ns3ZOH7w==;"
    "BGFKQP7EENf3s5hTDXvlh+xyJ1Q9BNIa9LyYbYK+pTAKAGQ2fmI40p5QOrpHpvb+UuOrNQJdhzggHNfyyyDyf/g="
)
BRAINPOOL_QR = (
    "V0;AMA-6200;KassenBeleg-V1;Beleg^2.90_0.00_0.00_0.00_2.10^5.00:Unbar;160504;344413;2021-07-23T10:12:54.000Z;"
    "2021-07-23T10:12:55.000Z;ecdsa-plain-SHA384;unixTime;"
    "NgqBkWMvhLmCKa9cJJ8JodfAdlkfcFFyW0J7Ks9lTz9I4QFKhLzyGF/02kWsCRg0LoiJtkq+0Ak9GovodNFLOBG00ewEj40/GbI9zLtNt9j90w4Sz3GcxTSrr3rqhIhN;"
    "BCd1vZvSJsJwBTqshgDVsrG4Gg+oN3jeeFEgjGiKs9ELd170vy/jO3iMMF6tAVUfjyYn9jRXng8Z4qWXaqoJ53+y+OFeSY/lQsdZWCODkzhlhkJxJw2k9Z1A4gFX6Riotw=="
)
REAL_QR = {"P-256": P256_QR, "brainpoolP384r1": BRAINPOOL_QR}


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def floorgate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``floorgate ARGS…`` as a child process of this interpreter (exit status, stdout and stderr as text)."""
    return subprocess.run([sys.executable, "-m", "floorgate_cli", *args], capture_output=True, text=True,
                          input=stdin, cwd=ROOT, check=False, timeout=120)  # fmt: skip


def change_one_character(qr: str, field: int) -> str:
    """``qr`` with one letter or digit of its ``field``-th field (0-based; the first from the middle on) replaced by
    another of the same kind, so that the field keeps its syntax and only the value changes."""
    starts = [0] + [i + 1 for i, c in enumerate(qr) if c == ";"]
    end = starts[field + 1] - 1 if field + 1 < len(starts) else len(qr)
    at = next(i for i in range((starts[field] + end) // 2, end) if qr[i].isalnum())
    old = qr[at]
    new = str((int(old) + 1) % 10) if old.isdigit() else ("B" if old == "A" else "b" if old == "a" else "A")
    return qr[:at] + new + qr[at + 1 :]
