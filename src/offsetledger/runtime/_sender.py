"""Output sender: produces a run's outputs in one ``produce_many`` call and
collects the delivery reports until each produce round (:class:`Send`) settles."""

from __future__ import annotations

from offsetledger.core import Header, ProducerPort, produce_many
from offsetledger.runtime._work import Send

__all__ = ["Sender"]


class Sender:
    """Owns the produce rounds waiting for delivery reports (``awaiting``) and those
    whose reports are all in (:meth:`settled`)."""

    def __init__(self, producer: ProducerPort) -> None:
        self._producer = producer
        self._settled: list[Send] = []
        self.awaiting = 0  #: produce rounds still waiting for a delivery report
        self.awaiting_records = 0  #: records whose outputs wait for delivery reports

    def settle_to(self, send: Send) -> None:
        """The sink of every Send: its last report arrived."""
        self.awaiting -= 1
        self.awaiting_records -= len(send.records)
        self._settled.append(send)

    def send(self, send: Send, extra_headers: list[tuple[Header, ...]] | None = None) -> None:
        """Produce ``send``'s messages (reports may arrive during the call, when the
        client refuses a message at once)."""
        self.awaiting += 1
        self.awaiting_records += len(send.records)
        produce_many(self._producer, send.messages, send.report, extra_headers)

    @property
    def has_settled(self) -> bool:
        return bool(self._settled)

    def settled(self) -> list[Send]:
        """The produce rounds whose reports are all in, since the last call."""
        done, self._settled = self._settled, []
        return done

    def poll(self, timeout: float) -> None:
        """Serve delivery reports (waiting up to ``timeout`` for the first)."""
        self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` for every outstanding report; returns how many are
        still outstanding."""
        return self._producer.flush(timeout)
