"""`ConnectionBook`: waiting connections are closed oldest first; busy ones and talkers never."""

from __future__ import annotations

from kaizen_server.http.connections import ConnectionBook


class _Conn:
    def __init__(self, name: str, *, talking: bool = False) -> None:
        self.name = name
        self.talking = talking
        self.closed = False

    def close_waiting(self) -> None:
        self.closed = True

    def has_unread_data(self) -> bool:
        return self.talking

    def __repr__(self) -> str:
        return self.name


def test_the_oldest_waiting_connection_of_the_client_over_its_cap_is_closed() -> None:
    book = ConnectionBook(max_connections=10, max_per_client=3, max_requests=5)
    a, b, c, d = (_Conn(n) for n in "abcd")
    other = _Conn("other")
    book.opened(a, "1.1.1.1")
    book.opened(other, "2.2.2.2")
    book.opened(b, "1.1.1.1")
    book.busy(a)  # a is serving a request: never closed
    book.opened(c, "1.1.1.1")
    book.opened(d, "1.1.1.1")
    assert (a.closed, b.closed, c.closed, d.closed, other.closed) == (False, True, False, False,
                                                                       False)
    assert (book.open, book.closed_waiting) == (4, 1)


def test_over_the_total_cap_the_oldest_silent_waiting_connection_goes() -> None:
    book = ConnectionBook(max_connections=3, max_per_client=10, max_requests=5)
    talker = _Conn("talker", talking=True)  # its head has arrived, not yet read
    idle, new1, new2 = _Conn("idle"), _Conn("new1"), _Conn("new2")
    book.opened(talker, "1")
    book.opened(idle, "2")
    book.busy(idle)
    book.idle(idle)  # a keep-alive connection between requests: waiting again, newest
    book.opened(new1, "3")
    book.opened(new2, "4")
    assert [x.closed for x in (talker, idle, new1, new2)] == [False, True, False, False]
    book.closed(talker)
    book.closed(talker)  # twice: counted once
    assert book.open == 2


def test_the_new_connection_goes_when_every_other_is_busy() -> None:
    book = ConnectionBook(max_connections=1, max_per_client=5, max_requests=5)
    busy, new = _Conn("busy"), _Conn("new")
    book.opened(busy, "1")
    book.busy(busy)
    book.opened(new, "1")
    assert (busy.closed, new.closed, book.open) == (False, True, 1)


def test_only_requests_count_toward_the_request_cap() -> None:
    book = ConnectionBook(max_connections=100, max_per_client=100, max_requests=2)
    for i in range(50):
        book.opened(_Conn(str(i)), "1")  # head-less: no request
    assert book.start_request() and book.start_request()
    assert not book.start_request()
    book.end_request()
    assert book.start_request() and book.requests == 2
