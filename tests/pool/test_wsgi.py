"""CowMiddleware binds each request from its headers, through the end of the response body."""

from __future__ import annotations

import threading
from wsgiref.util import setup_testing_defaults

import pytest

import cowsync
from cowsync.pool.headers import HeaderNames, environ_key
from cowsync.pool.wsgi import CowMiddleware
from tests.pool.conftest import probe


class Response:
    """What the middleware answered: status, headers and the body, consumed like a server."""

    def __init__(self, middleware, headers=None, consume=True):
        self.environ = {}
        setup_testing_defaults(self.environ)
        for name, value in (headers or {}).items():
            self.environ[environ_key(name)] = value
        self.status = None
        self.headers = None
        self.result = middleware(self.environ, self._start_response)
        self.body = b""
        if consume:
            self.finish()

    def _start_response(self, status, headers, exc_info=None):
        self.status, self.headers = status, dict(headers)
        return lambda data: None

    def finish(self):
        try:
            self.body = b"".join(self.result)
        finally:
            close = getattr(self.result, "close", None)
            if close:
                close()
        return self

    @property
    def text(self):
        return self.body.decode()


def binding_app(environ, start_response):
    """Answers with the binding it runs under."""
    binding = cowsync.current_binding()
    start_response("200 OK", [("Content-Type", "text/plain")])
    if binding is None:
        return [b"unbound"]
    return [repr((binding.session_id, binding.operation_id, binding.visible_operations)).encode()]


class AppWasCalled(Exception):
    pass


def forbidden_app(environ, start_response):
    raise AppWasCalled


def test_request_without_headers_runs_unbound():
    assert Response(CowMiddleware(binding_app)).text == "unbound"


def test_headers_bind_session_operation_and_preview():
    response = Response(
        CowMiddleware(binding_app),
        {
            "X-Cow-Session-Id": "agent-1",
            "X-Cow-Operation-Id": "tool-call-7",
            "X-Cow-Visible-Operations": "op-a, op-b",
        },
    )
    assert response.status == "200 OK"
    assert response.text == repr(("agent-1", "tool-call-7", ("op-a", "op-b")))


def test_header_names_are_configurable():
    middleware = CowMiddleware(binding_app, session_header="X-Sandbox", operation_header="X-Step")
    response = Response(middleware, {"X-Sandbox": "s9", "X-Step": "st1"})
    assert response.text == repr(("s9", "st1", None))
    # The default names no longer mean anything.
    assert Response(middleware, {"X-Cow-Session-Id": "s9"}).text == "unbound"


def test_binding_ends_with_the_request():
    Response(CowMiddleware(binding_app), {"X-Cow-Session-Id": "s1"})
    assert cowsync.current_binding() is None


@pytest.mark.parametrize(
    ("headers", "complaint"),
    [
        ({"X-Cow-Session-Id": "a" * 201}, "X-Cow-Session-Id"),
        ({"X-Cow-Session-Id": "s1'; DROP TABLE items; --"}, "X-Cow-Session-Id"),
        ({"X-Cow-Session-Id": "s1", "X-Cow-Operation-Id": "op 1"}, "X-Cow-Operation-Id"),
        ({"X-Cow-Operation-Id": "op1"}, "needs a X-Cow-Session-Id"),
        ({"X-Cow-Visible-Operations": "op1"}, "needs a X-Cow-Session-Id"),
        ({"X-Cow-Session-Id": "s1", "X-Cow-Visible-Operations": "op1,,op2"}, "empty entry"),
        ({"X-Cow-Session-Id": "s1", "X-Cow-Visible-Operations": "op1,b@d!"}, "b@d!"),
    ],
)
def test_bad_header_gets_400_with_a_clear_body_and_never_reaches_the_app(headers, complaint):
    response = Response(CowMiddleware(forbidden_app), headers)
    assert response.status == "400 Bad Request"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert int(response.headers["Content-Length"]) == len(response.body)
    assert complaint in response.text


def test_authorize_refusal_gets_403_and_never_reaches_the_app():
    asked = []

    def authorize(environ, session_id):
        asked.append((environ["PATH_INFO"], session_id))
        return session_id == "mine"

    middleware = CowMiddleware(forbidden_app, authorize=authorize)
    response = Response(middleware, {"X-Cow-Session-Id": "theirs"})
    assert response.status == "403 Forbidden"
    assert "theirs" in response.text
    assert asked == [("/", "theirs")]
    allowed = Response(
        CowMiddleware(binding_app, authorize=authorize), {"X-Cow-Session-Id": "mine"}
    )
    assert allowed.text == repr(("mine", None, None))


def test_authorize_is_not_asked_without_a_session():
    def authorize(environ, session_id):
        raise AssertionError("asked")

    assert Response(CowMiddleware(binding_app, authorize=authorize)).text == "unbound"


def test_invalid_header_names_are_refused():
    with pytest.raises(cowsync.ConfigurationError):
        HeaderNames(session="X Cow")
    with pytest.raises(cowsync.ConfigurationError):
        CowMiddleware(binding_app, session_header="X-A", operation_header="x-a")


# --- streaming ------------------------------------------------------------------------------


def test_binding_holds_while_the_body_streams_and_ends_after_close(cow_items, make_pool):
    cow_items("s1")
    pool = make_pool()
    events = []

    class StreamedBody:
        """A body whose every chunk and close() read the database through the pool."""

        def __iter__(self):
            for n in range(3):
                with pool.connection() as conn:
                    session, _, _, _, secrets = probe(conn)
                events.append(("chunk", session, secrets))
                yield f"{n}:{session}:{','.join(secrets)}\n".encode()

        def close(self):
            with pool.connection() as conn:
                events.append(("close", probe(conn)[0], None))

    def streaming_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return StreamedBody()

    response = Response(CowMiddleware(streaming_app), {"X-Cow-Session-Id": "s1"}, consume=False)
    # The app has returned: the server's own context is not bound.
    assert cowsync.current_binding() is None
    assert events == []
    response.finish()
    assert response.text == "0:s1:secret-s1\n1:s1:secret-s1\n2:s1:secret-s1\n"
    assert events[-1] == ("close", "s1", None)
    assert cowsync.current_binding() is None
    with pool.connection() as conn:
        assert probe(conn)[0] == ""


def test_body_consumed_in_another_thread_keeps_the_binding():
    def generator_app(environ, start_response):
        start_response("200 OK", [])

        def chunks():
            for _ in range(2):
                binding = cowsync.current_binding()
                yield (binding.session_id if binding else "unbound").encode()

        return chunks()

    response = Response(CowMiddleware(generator_app), {"X-Cow-Session-Id": "s1"}, consume=False)
    done = []
    worker = threading.Thread(target=lambda: done.append(response.finish().text))
    worker.start()
    worker.join()
    assert done == ["s1s1"]


def test_requests_bound_to_different_sessions_do_not_mix():
    first = Response(CowMiddleware(binding_app), {"X-Cow-Session-Id": "a"}, consume=False)
    second = Response(CowMiddleware(binding_app), {"X-Cow-Session-Id": "b"}, consume=False)
    assert second.finish().text == repr(("b", None, None))
    assert first.finish().text == repr(("a", None, None))


def test_request_inside_an_outer_binding_restores_it():
    with cowsync.bind("outer"):
        inner = Response(CowMiddleware(binding_app), {"X-Cow-Session-Id": "inner"})
        unbound = Response(CowMiddleware(binding_app))
        assert cowsync.current_binding().session_id == "outer"
    assert inner.text == repr(("inner", None, None))
    assert unbound.text == repr(("outer", None, None))
